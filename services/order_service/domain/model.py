"""The order model: enums, the order itself, fills, what the exchange reports, and the side effects owed.

Pure data and arithmetic: no gRPC, no SQL. Every amount is a ``Decimal`` with at most 8 places.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_HALF_UP, Decimal
from enum import StrEnum

from shared.money import CTX, QUANTUM, ZERO, div_round

from .states import FINAL_STATES, PUBLIC_STATUS, State, Status


class Side(StrEnum):
    """Buy or sell."""

    BUY = "BUY"
    SELL = "SELL"


class OrderType(StrEnum):
    """Order types of the public API, one for one the gateway contract's (the gateway maps them to the exchange's)."""

    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"
    STOP_LIMIT = "STOP_LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
    LIMIT_MAKER = "LIMIT_MAKER"


class TimeInForce(StrEnum):
    """Time in force; NONE for the market types, which have none."""

    NONE = ""
    GTC = "GTC"
    IOC = "IOC"
    FOK = "FOK"


PRICED_TYPES = frozenset({OrderType.LIMIT, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT_LIMIT, OrderType.LIMIT_MAKER})
"""Types that carry a limit price."""
TIME_IN_FORCE_TYPES = PRICED_TYPES - {OrderType.LIMIT_MAKER}
"""Types that carry a time in force (LIMIT_MAKER only rests: it has none)."""
TRIGGERED_TYPES = frozenset({OrderType.STOP, OrderType.STOP_LIMIT, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT})
"""Types that carry a stop price."""
MARKET_TYPES = frozenset({OrderType.MARKET, OrderType.STOP, OrderType.TAKE_PROFIT})
"""Types that execute as market orders (MARKET_LOT_SIZE applies, the reservation needs a price estimate)."""


class UserStatus(StrEnum):
    """A user's status as the user service reports it."""

    ACTIVE = "ACTIVE"
    INACTIVE = "INACTIVE"
    SUSPENDED = "SUSPENDED"
    UNKNOWN = "UNKNOWN"


class Scope(StrEnum):
    """What an API key may do: READ lists, gets and watches; TRADE also places and cancels."""

    READ = "READ"
    TRADE = "TRADE"


TRADE_SCOPES = frozenset({Scope.READ, Scope.TRADE})


ORDER_ID_PREFIX = "ord"
"""Order ids are ``new_id(ORDER_ID_PREFIX)``: they sort in creation order."""


@dataclass(frozen=True)
class Caller:
    """The user an API key acts for, what the key may do, and when it expires (None: never)."""

    user_id: str
    status: UserStatus
    key_id: str = ""
    scopes: frozenset[Scope] = TRADE_SCOPES
    expire_ms: int | None = None


@dataclass(frozen=True)
class FeeSchedule:
    """The platform's fee schedule: what a user pays per trade, as a fraction of what the user receives.

    It is independent of what the exchange charges the platform's account (in any asset, BNB
    included): that is the platform's cost, booked to a house account.
    """

    maker: Decimal = Decimal("0.001")
    taker: Decimal = Decimal("0.001")

    def fee(self, received: Decimal, is_maker: bool) -> Decimal:
        """The fee on ``received`` (the trade's credit), rounded half-up to 8 places."""
        rate = self.maker if is_maker else self.taker
        return (received * rate).quantize(QUANTUM, rounding=ROUND_HALF_UP, context=CTX)


@dataclass(frozen=True)
class Submission:
    """What is sent to the gateway for an order: its type and prices in the gateway's terms.

    A MARKET or STOP buy is sent as a LIMIT / STOP_LIMIT IOC at its price cap, so that the exchange
    itself refuses to trade above what was reserved; everything else is sent as placed.
    """

    type: OrderType
    time_in_force: TimeInForce
    price: Decimal | None
    stop_price: Decimal | None


@dataclass(frozen=True)
class UserLimits:
    """One user's share of the exchange: new orders per second and open orders at once."""

    orders_per_second: Decimal
    max_open_orders: int


@dataclass(frozen=True)
class SymbolRules:
    """The trading rules of one symbol as the gateway publishes them; zero means "no limit".

    ``trading`` and ``order_types`` are the gateway's verdicts (whether the exchange takes orders for the
    symbol now, which types it accepts; no types: every type); ``status`` is the exchange's word for the
    symbol's state, shown in messages and never interpreted here.
    """

    symbol: str
    status: str
    base_asset: str
    quote_asset: str
    trading: bool
    min_price: Decimal = ZERO
    max_price: Decimal = ZERO
    tick_size: Decimal = ZERO
    min_quantity: Decimal = ZERO
    max_quantity: Decimal = ZERO
    step_size: Decimal = ZERO
    market_min_quantity: Decimal = ZERO
    market_max_quantity: Decimal = ZERO
    market_step_size: Decimal = ZERO
    min_notional: Decimal = ZERO
    max_notional: Decimal = ZERO
    apply_min_to_market: bool = False
    apply_max_to_market: bool = False
    order_types: frozenset[OrderType] = frozenset()


@dataclass(frozen=True)
class Order:
    """One user's order, as this service keeps it."""

    order_id: str
    client_order_id: str
    user_id: str
    symbol: str
    base_asset: str
    quote_asset: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    expire_time_ms: int | None
    reserve_asset: str
    reserve_amount: Decimal
    state: State
    create_time_ms: int
    update_time_ms: int
    filled_quantity: Decimal = ZERO
    filled_quote_quantity: Decimal = ZERO
    commission: Decimal = ZERO
    commission_asset: str = ""
    reject_reason: str = ""
    exchange_order_id: str = ""
    cancel_requested: bool = False
    expire_requested: bool = False
    version: int = 1

    @property
    def status(self) -> Status:
        """The public status (the finer internal states all show as PENDING)."""
        return PUBLIC_STATUS[self.state]

    @property
    def is_final(self) -> bool:
        """Whether nothing more can happen to the order (except a very late trade, which is still settled)."""
        return self.state in FINAL_STATES

    @property
    def remaining_quantity(self) -> Decimal:
        """Ordered minus filled quantity (never negative)."""
        return max(ZERO, self.quantity - self.filled_quantity)

    @property
    def average_price(self) -> Decimal:
        """Quote filled divided by base filled, rounded half-even to 8 places; zero before the first fill."""
        if self.filled_quantity == 0:
            return ZERO
        return div_round(self.filled_quote_quantity, self.filled_quantity)

    def visible(self) -> tuple[object, ...]:
        """What a user can see of the order (the internal state and bookkeeping left out)."""
        return (
            self.status,
            self.filled_quantity,
            self.filled_quote_quantity,
            self.commission,
            self.commission_asset,
            self.reject_reason,
            self.exchange_order_id,
            self.cancel_requested,
        )

    def evolve(self, now_ms: int, **changes: object) -> Order:
        """Return a copy with ``changes`` applied, a new update time and the next version."""
        return replace(self, update_time_ms=now_ms, version=self.version + 1, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Fill:
    """One trade of an order at the exchange."""

    fill_id: str
    order_id: str
    symbol: str
    side: Side
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    commission: Decimal
    commission_asset: str
    is_maker: bool
    trade_time_ms: int
    sequence: int


class ExchangeStatus(StrEnum):
    """An order's state at the exchange as the gateway reports it."""

    UNKNOWN = "UNKNOWN"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class ExecutionType(StrEnum):
    """What one execution report says happened."""

    NEW = "NEW"
    TRADE = "TRADE"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


@dataclass(frozen=True)
class ExchangeOrder:
    """The gateway's view of an order (the answer to submit, cancel and query)."""

    client_order_id: str
    exchange_order_id: int
    status: ExchangeStatus
    executed_quantity: Decimal
    cumulative_quote_quantity: Decimal
    reject_reason: str = ""


@dataclass(frozen=True)
class ExecutionReport:
    """One journaled execution from the gateway's StreamExecutions."""

    sequence: int
    client_order_id: str
    exchange_order_id: int
    symbol: str
    execution_type: ExecutionType
    order_status: ExchangeStatus
    trade_id: int = 0
    last_quantity: Decimal = ZERO
    last_price: Decimal = ZERO
    last_quote_quantity: Decimal = ZERO
    cumulative_quantity: Decimal = ZERO
    cumulative_quote_quantity: Decimal = ZERO
    commission: Decimal = ZERO
    commission_asset: str = ""
    is_maker: bool = False
    reject_reason: str = ""
    transaction_time_ms: int = 0

    @property
    def fill_id(self) -> str:
        """The fill's unique id, ``<symbol>:<trade id>`` (the gateway contract: a trade id is unique per symbol)."""
        return f"{self.symbol}:{self.trade_id}"


# --- side effects owed to the user service (stored in the outbox, performed with idempotency keys) ---


@dataclass(frozen=True)
class SettleTrade:
    """Book one trade against the order's reservation; idempotent on trade_id.

    ``fee_*`` is the platform's fee the user pays (in the asset received); ``exchange_fee_*`` is what
    the exchange charged the platform's account for the trade, in whatever asset (the house's cost).
    """

    trade_id: str
    order_id: str
    user_id: str
    debit_asset: str
    debit_amount: Decimal
    credit_asset: str
    credit_amount: Decimal
    fee_asset: str
    fee_amount: Decimal
    trade_time_ms: int
    exchange_fee_asset: str = ""
    exchange_fee_amount: Decimal = ZERO


@dataclass(frozen=True)
class ReleaseFunds:
    """Return the order's reservation (``amount`` None: all that is left); idempotent on release_id."""

    order_id: str
    release_id: str
    amount: Decimal | None = None


Effect = SettleTrade | ReleaseFunds


def final_release(order_id: str) -> ReleaseFunds:
    """The release owed when an order ends: everything still reserved, once."""
    return ReleaseFunds(order_id=order_id, release_id=f"{order_id}:final")


@dataclass(frozen=True)
class Outcome:
    """What applying one event to an order produced: the new order, a fill, effects, and any anomaly."""

    order: Order
    fill: Fill | None = None
    effects: tuple[Effect, ...] = ()
    anomaly: str = ""
