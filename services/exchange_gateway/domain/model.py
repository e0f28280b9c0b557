"""The gateway's domain: orders as the journal knows them, executions, symbol rules.

Pure data and rules; no gRPC, no SQL, no HTTP. Quantities and prices are exact ``Decimal``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from decimal import Decimal
from enum import StrEnum

CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,36}$")
ZERO = Decimal(0)


class Side(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"


# Types with a limit price; all but LIMIT_MAKER (post-only, never a time in force) take a time in force.
LIMIT_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT, OrderType.LIMIT_MAKER})
TIME_IN_FORCE_TYPES = LIMIT_TYPES - {OrderType.LIMIT_MAKER}
STOP_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT})
MARKET_LIKE = frozenset({OrderType.MARKET, OrderType.STOP, OrderType.TAKE_PROFIT})


class TimeInForce(StrEnum):
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


class OrderStatus(StrEnum):
    UNKNOWN = "UNKNOWN"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


FINAL_STATUSES = frozenset({OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED})
OPEN_STATUSES = frozenset({OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED})

_S = OrderStatus
TRANSITIONS: frozenset[tuple[OrderStatus, OrderStatus]] = frozenset(
    {
        # An unknown outcome resolves to anything the exchange can report.
        (_S.UNKNOWN, _S.NEW),
        (_S.UNKNOWN, _S.PARTIALLY_FILLED),
        (_S.UNKNOWN, _S.FILLED),
        (_S.UNKNOWN, _S.CANCELED),
        (_S.UNKNOWN, _S.REJECTED),
        (_S.UNKNOWN, _S.EXPIRED),
        # Working.
        (_S.NEW, _S.PARTIALLY_FILLED),
        (_S.NEW, _S.FILLED),
        (_S.NEW, _S.CANCELED),
        (_S.NEW, _S.REJECTED),  # a triggered stop-limit can still be refused
        (_S.NEW, _S.EXPIRED),
        (_S.PARTIALLY_FILLED, _S.PARTIALLY_FILLED),
        (_S.PARTIALLY_FILLED, _S.FILLED),
        (_S.PARTIALLY_FILLED, _S.CANCELED),
        (_S.PARTIALLY_FILLED, _S.EXPIRED),
    }
)
"""The order state machine: the (from, to) moves an order may make; nothing leaves a final status.

Nothing moves back either: a stale answer (a REST query that left before the last trade) cannot
turn a FILLED order into NEW again.
"""


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    """Whether the table allows ``current`` -> ``target``."""
    return (current, target) in TRANSITIONS


class ExecType(StrEnum):
    NEW = "NEW"
    TRADE = "TRADE"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


FINAL_EXEC_STATUS = {
    ExecType.CANCELED: OrderStatus.CANCELED,
    ExecType.REJECTED: OrderStatus.REJECTED,
    ExecType.EXPIRED: OrderStatus.EXPIRED,
}


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """A validated SubmitOrder request."""

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce | None
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None

    def same_order(self, other: OrderRequest) -> bool:
        """Whether ``other`` asks for the same order (a retry), comparing values, not spellings."""
        return (
            self.symbol == other.symbol
            and self.side == other.side
            and self.type == other.type
            and self.time_in_force == other.time_in_force
            and self.quantity == other.quantity
            and self.price == other.price
            and self.stop_price == other.stop_price
        )


@dataclass(frozen=True, slots=True)
class Order:
    """An order as the journal knows it, keyed by client_order_id."""

    client_order_id: str
    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce | None
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    status: OrderStatus = OrderStatus.UNKNOWN
    exchange_order_id: int = 0
    executed_qty: Decimal = ZERO
    cum_quote_qty: Decimal = ZERO
    reject_reason: str = ""
    create_time_ms: int = 0
    update_time_ms: int = 0
    # The ``timestamp`` of the last request that may have placed the order (exchange clock, ms) and
    # its recvWindow: once the exchange's clock is past both, the order can no longer appear.
    request_time_ms: int = 0
    recv_window_ms: int = 5000
    cancel_requested: bool = False
    reported_new: bool = False

    @classmethod
    def from_request(cls, request: OrderRequest, *, now_ms: int, request_time_ms: int, recv_window_ms: int) -> Order:
        """A freshly journaled order: status UNKNOWN until the exchange answers."""
        return cls(
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=request.side,
            type=request.type,
            time_in_force=request.time_in_force,
            quantity=request.quantity,
            price=request.price,
            stop_price=request.stop_price,
            create_time_ms=now_ms,
            update_time_ms=now_ms,
            request_time_ms=request_time_ms,
            recv_window_ms=recv_window_ms,
        )

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def request(self) -> OrderRequest:
        return OrderRequest(
            self.client_order_id,
            self.symbol,
            self.side,
            self.type,
            self.time_in_force,
            self.quantity,
            self.price,
            self.stop_price,
        )

    def with_changes(self, **changes: object) -> Order:
        """A copy with ``changes`` applied."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Fill:
    """One trade of an order, from any source (user data stream, order response, myTrades)."""

    trade_id: int
    quantity: Decimal
    price: Decimal
    quote_quantity: Decimal
    commission: Decimal
    commission_asset: str
    is_maker: bool
    time_ms: int


@dataclass(frozen=True, slots=True)
class Execution:
    """One journaled execution report; ``sequence`` is 0 until the journal assigns it."""

    client_order_id: str
    exchange_order_id: int
    symbol: str
    side: Side
    exec_type: ExecType
    order_status: OrderStatus
    trade_id: int = 0
    last_qty: Decimal = ZERO
    last_price: Decimal = ZERO
    last_quote_qty: Decimal = ZERO
    cum_qty: Decimal = ZERO
    cum_quote_qty: Decimal = ZERO
    commission: Decimal = ZERO
    commission_asset: str = ""
    is_maker: bool = False
    reject_reason: str = ""
    transaction_time_ms: int = 0
    journal_time_ms: int = 0
    sequence: int = 0

    @property
    def dedup_key(self) -> str:
        """TRADE: one per (symbol, trade id); other types: one per (client order id, type)."""
        if self.exec_type is ExecType.TRADE:
            return f"T|{self.symbol}|{self.trade_id}"
        return f"X|{self.client_order_id}|{self.exec_type.value}"

    @property
    def trade_identity(self) -> TradeIdentity:
        """The trade's identity (meaningful for TRADE executions)."""
        return TradeIdentity(
            self.client_order_id, self.exchange_order_id, self.last_price, self.last_qty, self.transaction_time_ms
        )


@dataclass(frozen=True, slots=True)
class TradeIdentity:
    """What makes two reports of a trade key the same trade: its order, price, quantity and time."""

    client_order_id: str
    exchange_order_id: int
    price: Decimal
    quantity: Decimal
    time_ms: int

    @classmethod
    def of_fill(cls, client_order_id: str, exchange_order_id: int, fill: Fill) -> TradeIdentity:
        return cls(client_order_id, exchange_order_id, fill.price, fill.quantity, fill.time_ms)

    def differences(self, other: TradeIdentity) -> list[str]:
        """Names of the fields in which ``other`` is another trade (an id or a time of 0 is not known)."""
        found = []
        if self.client_order_id != other.client_order_id:
            found.append("client_order_id")
        if self.exchange_order_id and other.exchange_order_id and self.exchange_order_id != other.exchange_order_id:
            found.append("order_id")
        if self.price != other.price:
            found.append("price")
        if self.quantity != other.quantity:
            found.append("quantity")
        if self.time_ms and other.time_ms and self.time_ms != other.time_ms:
            found.append("time")
        return found

    def describe(self) -> str:
        """One line for the anomaly record and the log."""
        return (
            f"client_order_id={self.client_order_id} order_id={self.exchange_order_id} "
            f"price={format(self.price, 'f')} quantity={format(self.quantity, 'f')} time_ms={self.time_ms}"
        )


def trade_key(symbol: str, trade_id: int) -> str:
    """The dedup key of a trade."""
    return f"T|{symbol}|{trade_id}"


@dataclass(frozen=True)
class SymbolRules:
    """A symbol's trading rules from exchangeInfo. ``None`` or zero means the filter is absent.

    ``trading`` and ``allowed_types`` are what the exchange's status and order type names mean, decided by the
    venue adapter; ``status`` and ``order_types`` keep the exchange's own words for messages and operators.
    """

    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    trading: bool
    min_price: Decimal = ZERO
    max_price: Decimal = ZERO
    tick_size: Decimal = ZERO
    min_qty: Decimal = ZERO
    max_qty: Decimal = ZERO
    step_size: Decimal = ZERO
    market_min_qty: Decimal = ZERO
    market_max_qty: Decimal = ZERO
    market_step_size: Decimal = ZERO
    min_notional: Decimal = ZERO
    max_notional: Decimal = ZERO
    apply_min_to_market: bool = False
    apply_max_to_market: bool = False
    bid_multiplier_up: Decimal = ZERO
    bid_multiplier_down: Decimal = ZERO
    ask_multiplier_up: Decimal = ZERO
    ask_multiplier_down: Decimal = ZERO
    multiplier_up: Decimal = ZERO
    multiplier_down: Decimal = ZERO
    max_num_orders: int = 0
    max_num_algo_orders: int = 0
    order_types: tuple[str, ...] = ()
    allowed_types: frozenset[OrderType] = field(default_factory=frozenset)
    base_asset_precision: int = 8
    quote_asset_precision: int = 8


@dataclass(frozen=True)
class Balance:
    """One asset of the exchange account."""

    asset: str
    free: Decimal
    locked: Decimal


@dataclass(frozen=True, slots=True)
class OrderSnapshot:
    """An order as the exchange reports it (order response, query, open orders, cancel answer)."""

    client_order_id: str
    exchange_order_id: int
    symbol: str
    status: OrderStatus
    executed_qty: Decimal
    cum_quote_qty: Decimal
    time_ms: int
    fills: tuple[Fill, ...] = ()
    reason: str = ""
    # What an order the gateway did not place needs to be described (the exchange's type name).
    side: Side | None = None
    order_type: str = ""
    price: Decimal = ZERO
    quantity: Decimal = ZERO


@dataclass(frozen=True, slots=True)
class ExchangeEvent:
    """One execution report from the user data stream, in domain terms."""

    client_order_id: str
    exchange_order_id: int
    symbol: str
    exec_type: ExecType
    order_status: OrderStatus
    cum_qty: Decimal
    time_ms: int
    fill: Fill | None = None
    reason: str = ""
    # What an order the gateway did not place needs to be described (the exchange's type name).
    side: Side | None = None
    order_type: str = ""
    price: Decimal = ZERO
    quantity: Decimal = ZERO


class AnomalyKind(StrEnum):
    # A trade key (symbol, trade id) the journal holds came again with other content.
    TRADE_KEY_CLASH = "TRADE_KEY_CLASH"
    # An order the exchange had accepted and the journal has open is unknown to the exchange.
    EXCHANGE_FORGOT_ORDER = "EXCHANGE_FORGOT_ORDER"
    # A report would move an order in a way ``TRANSITIONS`` does not allow (a CANCELED order filled).
    REFUSED_TRANSITION = "REFUSED_TRANSITION"


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Something the exchange reported that contradicts the journal; recorded once, never settled."""

    kind: AnomalyKind
    symbol: str
    client_order_id: str
    trade_id: int
    journaled: str  # what the journal holds
    received: str  # what the exchange reported
    first_seen_ms: int

    @property
    def dedup_key(self) -> str:
        """One record per clash (trade key and the order it now comes for), per forgotten order, per refused move."""
        if self.kind is AnomalyKind.TRADE_KEY_CLASH:
            return f"{self.kind.value}|{self.symbol}|{self.trade_id}|{self.client_order_id}"
        if self.kind is AnomalyKind.REFUSED_TRANSITION:
            return f"{self.kind.value}|{self.client_order_id}|{self.trade_id}|{self.journaled}|{self.received}"
        return f"{self.kind.value}|{self.client_order_id}"

    @property
    def detail(self) -> str:
        if self.kind is AnomalyKind.TRADE_KEY_CLASH:
            return (
                f"trade {self.symbol} #{self.trade_id} is journaled as ({self.journaled}); "
                f"the exchange now reports ({self.received})"
            )
        if self.kind is AnomalyKind.REFUSED_TRANSITION:
            kept = (
                "the status stays; the trade is journaled (fills are money)"
                if self.trade_id
                else "nothing is journaled"
            )
            return (
                f"order {self.client_order_id} on {self.symbol} is {self.journaled}; the exchange reports "
                f"{self.received}, a move the state table does not allow: {kept}"
            )
        return (
            f"order {self.client_order_id} on {self.symbol} is open in the journal ({self.journaled}); "
            f"the exchange answers ({self.received})"
        )


ForeignPosition = tuple[int, str, int, str]
"""A foreign order's place in the listing: (first_seen_ms, symbol, exchange_order_id, client_order_id)."""


@dataclass(frozen=True, slots=True)
class ForeignOrder:
    """An order on the exchange account that the gateway did not place (kept apart from the journal's orders).

    ``is_open`` is whether the exchange still had it open when last heard of; ``status`` is the last
    status it reported (an order that disappeared without one keeps the last one known).
    """

    symbol: str
    client_order_id: str
    exchange_order_id: int
    side: Side | None
    type: str  # the exchange's order type name: the account may hold types the gateway never submits
    price: Decimal
    quantity: Decimal
    executed_qty: Decimal
    status: OrderStatus
    is_open: bool
    first_seen_ms: int = 0
    last_seen_ms: int = 0
    cancel_time_ms: int = 0  # when the gateway cancelled it (policy ``cancel``); 0 if it did not
    cancel_error: str = ""  # why the gateway's cancel failed; empty otherwise

    @property
    def key(self) -> tuple[str, int, str]:
        return (self.symbol, self.exchange_order_id, self.client_order_id)

    @property
    def position(self) -> ForeignPosition:
        """Where the order stands in the listing: first found first."""
        return (self.first_seen_ms, self.symbol, self.exchange_order_id, self.client_order_id)

    @classmethod
    def seen_in(cls, snap: OrderSnapshot, *, now_ms: int) -> ForeignOrder:
        """The order as an exchange answer (open orders, query, cancel) shows it."""
        return cls(
            symbol=snap.symbol,
            client_order_id=snap.client_order_id,
            exchange_order_id=snap.exchange_order_id,
            side=snap.side,
            type=snap.order_type,
            price=snap.price,
            quantity=snap.quantity,
            executed_qty=snap.executed_qty,
            status=snap.status,
            is_open=snap.status in OPEN_STATUSES,
            first_seen_ms=now_ms,
            last_seen_ms=now_ms,
        )

    @classmethod
    def seen_in_event(cls, event: ExchangeEvent, *, now_ms: int) -> ForeignOrder:
        """The order as a user data stream event shows it."""
        return cls(
            symbol=event.symbol,
            client_order_id=event.client_order_id,
            exchange_order_id=event.exchange_order_id,
            side=event.side,
            type=event.order_type,
            price=event.price,
            quantity=event.quantity,
            executed_qty=event.cum_qty,
            status=event.order_status,
            is_open=event.order_status in OPEN_STATUSES,
            first_seen_ms=now_ms,
            last_seen_ms=now_ms,
        )
