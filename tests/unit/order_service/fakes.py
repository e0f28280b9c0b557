"""Fakes of the order service's two remote ports, faithful to the contracts' idempotency rules.

``FakeUsers`` keeps balances, reservations and a ledger like the user service promises: reserve
idempotent on order_id, release on release_id (empty amount = all that is left), settle on trade_id
(debit from the reservation first, then from available; with a release_id, then release all that
is left under it, in the same step). ``FakeGateway`` journals orders by client
order id (a known id is never sent twice), emits executions with a gap-free sequence and lets a
test play the exchange (trades, cancels, expiries). Both can be told to fail at given points.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from services.order_service.domain.model import (
    Caller,
    ExchangeOrder,
    ExchangeStatus,
    ExecutionReport,
    ExecutionType,
    Order,
    OrderType,
    SettleTrade,
    Side,
    Submission,
    SymbolRules,
    UserStatus,
)
from shared.errors import Aborted, FailedPrecondition, NotFound, Unauthenticated, Unavailable
from shared.money import ZERO

D = Decimal
COMMISSION = D("0.001")


class Crash(BaseException):
    """The process dies here (BaseException: no use case catches it)."""


BTCUSDT = SymbolRules(
    symbol="BTCUSDT",
    status="TRADING",
    base_asset="BTC",
    quote_asset="USDT",
    trading=True,
    min_price=D("0.01"),
    max_price=D("1000000"),
    tick_size=D("0.01"),
    min_quantity=D("0.00001"),
    max_quantity=D("9000"),
    step_size=D("0.00001"),
    market_min_quantity=D("0"),
    market_max_quantity=D("100"),
    market_step_size=D("0.00001"),
    min_notional=D("5"),
    max_notional=D("9000000"),
    apply_min_to_market=True,
    apply_max_to_market=False,
    order_types=frozenset(
        {OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.MARKET, OrderType.STOP, OrderType.STOP_LIMIT}
    ),
)
ETHUSDT = replace(
    BTCUSDT, symbol="ETHUSDT", base_asset="ETH", tick_size=D("0.01"), step_size=D("0.0001"), min_quantity=D("0.0001")
)


@dataclass
class Reservation:
    user_id: str
    asset: str
    reserved: Decimal
    consumed: Decimal = ZERO
    released: Decimal = ZERO

    @property
    def remaining(self) -> Decimal:
        return self.reserved - self.consumed - self.released


@dataclass
class LedgerEntry:
    user_id: str
    asset: str
    kind: str
    available_delta: Decimal
    locked_delta: Decimal
    reference: str


@dataclass
class FakeUsers:
    """The user service as the order service sees it."""

    keys: dict[str, Caller] = field(default_factory=dict)
    balances: dict[tuple[str, str], list[Decimal]] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)
    releases: dict[str, Decimal] = field(default_factory=dict)
    trades: dict[str, SettleTrade] = field(default_factory=dict)
    ledger: list[LedgerEntry] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    peers: list[str] = field(default_factory=list)  # the client_peer of each authenticate
    # Hooks called as hook(method, stage) with stage "before" or "after" the effect; may raise.
    hook: Callable[[str, str], None] | None = None

    def add_user(self, user_id: str, api_key: str, status: UserStatus = UserStatus.ACTIVE) -> None:
        self.keys[api_key] = Caller(user_id=user_id, status=status, key_id=f"key_{user_id}")

    def set_status(self, user_id: str, status: UserStatus) -> None:
        for key, caller in list(self.keys.items()):
            if caller.user_id == user_id:
                self.keys[key] = replace(caller, status=status)

    def deposit(self, user_id: str, asset: str, amount: str) -> None:
        self._change(user_id, asset, "DEPOSIT", D(amount), D(0), ref="deposit")

    def balance(self, user_id: str, asset: str) -> tuple[Decimal, Decimal]:
        available, locked = self.balances.get((user_id, asset), [D(0), D(0)])
        return available, locked

    def _change(self, user_id: str, asset: str, kind: str, available: Decimal, locked: Decimal, *, ref: str) -> None:
        row = self.balances.setdefault((user_id, asset), [D(0), D(0)])
        row[0] += available
        row[1] += locked
        assert row[0] >= 0 and row[1] >= 0, f"{user_id} {asset} would go negative: {row}"
        self.ledger.append(LedgerEntry(user_id, asset, kind, available, locked, ref))

    def _hook(self, method: str, stage: str) -> None:
        if self.hook is not None:
            self.hook(method, stage)

    def _status(self, user_id: str) -> UserStatus:
        for caller in self.keys.values():
            if caller.user_id == user_id:
                return caller.status
        return UserStatus.ACTIVE

    async def authenticate(self, api_key: str, timeout: float, *, client_peer: str = "") -> Caller:
        self.calls["authenticate"] += 1
        self.peers.append(client_peer)
        caller = self.keys.get(api_key)
        if caller is None:
            raise Unauthenticated("unknown API key")
        return caller

    async def reserve_funds(self, order_id: str, user_id: str, asset: str, amount: Decimal, timeout: float) -> None:
        self.calls["reserve"] += 1
        self._hook("reserve", "before")
        existing = self.reservations.get(order_id)
        if existing is not None:
            if (existing.user_id, existing.asset, existing.reserved) != (user_id, asset, amount):
                raise Aborted("order_id reused with other content")
        else:
            if self._status(user_id) is not UserStatus.ACTIVE:
                raise FailedPrecondition("user is not ACTIVE", reason="USER_NOT_ACTIVE")
            available, _ = self.balance(user_id, asset)
            if available < amount:
                raise FailedPrecondition("insufficient funds", reason="INSUFFICIENT_FUNDS")
            self.reservations[order_id] = Reservation(user_id, asset, amount)
            self._change(user_id, asset, "RESERVE", -amount, amount, ref=order_id)
        self._hook("reserve", "after")

    async def open_reservations(self, after: str, before: str, timeout: float) -> list[str]:
        self.calls["open_reservations"] += 1
        return sorted(
            order_id
            for order_id, reservation in self.reservations.items()
            if after < order_id < before and reservation.remaining > 0
        )

    async def release_funds(self, order_id: str, release_id: str, amount: Decimal | None, timeout: float) -> None:
        self.calls["release"] += 1
        self._hook("release", "before")
        self._release(order_id, release_id, amount)
        self._hook("release", "after")

    def _release(self, order_id: str, release_id: str, amount: Decimal | None) -> None:
        if release_id not in self.releases:
            reservation = self.reservations.get(order_id)
            released = D(0)
            if reservation is not None:
                released = reservation.remaining if amount is None else min(amount, reservation.remaining)
                if released:
                    reservation.released += released
                    self._change(reservation.user_id, reservation.asset, "RELEASE", released, -released, ref=order_id)
            self.releases[release_id] = released

    async def settle_trade(self, trade: SettleTrade, timeout: float, *, release_id: str = "") -> None:
        """Settle; with ``release_id`` then release all that is left, in the same step (one "settle" hook)."""
        self.calls["settle"] += 1
        if release_id:
            self.calls["settle+release"] += 1
        self._hook("settle", "before")
        if trade.trade_id in self.trades:
            if self.trades[trade.trade_id] != trade:
                raise Aborted("trade_id reused with other content")
        else:
            reservation = self.reservations[trade.order_id]
            from_locked = min(reservation.remaining, trade.debit_amount)
            reservation.consumed += from_locked
            beyond = trade.debit_amount - from_locked
            ref = trade.trade_id
            self._change(trade.user_id, trade.debit_asset, "TRADE_DEBIT", -beyond, -from_locked, ref=ref)
            self._change(trade.user_id, trade.credit_asset, "TRADE_CREDIT", trade.credit_amount, D(0), ref=ref)
            if trade.fee_amount:
                self._change(trade.user_id, trade.fee_asset, "FEE", -trade.fee_amount, D(0), ref=ref)
            self.trades[trade.trade_id] = trade
        if release_id:
            self._release(trade.order_id, release_id, None)
        self._hook("settle", "after")


@dataclass
class JournaledOrder:
    order: Order
    status: ExchangeStatus
    exchange_order_id: int
    executed: Decimal = ZERO
    quote: Decimal = ZERO
    reject_reason: str = ""

    def snapshot(self) -> ExchangeOrder:
        return ExchangeOrder(
            client_order_id=self.order.order_id,
            exchange_order_id=self.exchange_order_id if self.status is not ExchangeStatus.UNKNOWN else 0,
            status=self.status,
            executed_quantity=self.executed,
            cumulative_quote_quantity=self.quote,
            reject_reason=self.reject_reason,
        )


FINAL = {ExchangeStatus.FILLED, ExchangeStatus.CANCELED, ExchangeStatus.REJECTED, ExchangeStatus.EXPIRED}


class FakeGateway:
    """The exchange gateway (and the exchange behind it) as the order service sees it."""

    def __init__(self) -> None:
        self.rules = {"BTCUSDT": BTCUSDT, "ETHUSDT": ETHUSDT}
        self.prices = {"BTCUSDT": D("50000.00"), "ETHUSDT": D("3000.00")}
        self.journal: dict[str, JournaledOrder] = {}
        self.executions: list[ExecutionReport] = []
        self.calls: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # how many times each order went to the "exchange"
        self.next_trade_id = 1000
        self.next_exchange_id = 1
        self._changed = asyncio.Condition()
        # Behaviour switches.
        self.submit_answer: ExchangeStatus | None = None  # e.g. UNKNOWN: journal but answer unknown
        self.reject_reason = ""  # non-empty: the exchange rejects new orders
        self.submit_error: Exception | None = None  # raised before journaling (nothing sent)
        self.hook: Callable[[str, str], None] | None = None  # hook(method, stage)
        self.stream_error: Exception | None = None
        self.emit_cancel_execution = True
        self.cancel_conclusive = True  # False: the exchange's answer to a cancel is not conclusive yet
        self.flowing = asyncio.Event()  # cleared: the stream holds executions back (a lagging consumer)
        self.flowing.set()
        self.submissions: dict[str, Submission] = {}  # what each order was last sent as
        self.down = False  # True: every call fails as on a refused connection (nothing reaches the gateway)

    def _refuse_if_down(self, method: str) -> None:
        if self.down:
            self.calls[f"{method}_refused"] += 1
            raise Unavailable("failed to connect to all addresses: connection refused")

    # --- the port ---------------------------------------------------------------------------

    async def submit_order(self, order: Order, submission: Submission, timeout: float) -> ExchangeOrder:
        self._refuse_if_down("submit")
        self.calls["submit"] += 1
        self.submissions[order.order_id] = submission
        if self.hook is not None:
            self.hook("submit", "before")
        if self.submit_error is not None:
            raise self.submit_error
        known = self.journal.get(order.order_id)
        if known is None:
            self.sent[order.order_id] += 1
            known = JournaledOrder(order, ExchangeStatus.NEW, self.next_exchange_id)
            self.next_exchange_id += 1
            self.journal[order.order_id] = known
            if self.reject_reason:
                known.status = ExchangeStatus.REJECTED
                known.reject_reason = self.reject_reason
                await self._emit(known, ExecutionType.REJECTED, reason=self.reject_reason)
            else:
                await self._emit(known, ExecutionType.NEW)
        if self.hook is not None:
            self.hook("submit", "after")
        if self.submit_answer is ExchangeStatus.UNKNOWN:
            return replace(known.snapshot(), status=ExchangeStatus.UNKNOWN, exchange_order_id=0)
        return known.snapshot()

    async def cancel_order(self, client_order_id: str, timeout: float) -> ExchangeOrder:
        self._refuse_if_down("cancel")
        self.calls["cancel"] += 1
        if self.hook is not None:
            self.hook("cancel", "before")
        known = self.journal.get(client_order_id)
        if known is None:
            raise NotFound(f"unknown order {client_order_id}")
        if known.status not in FINAL and self.cancel_conclusive:
            known.status = ExchangeStatus.CANCELED
            if self.emit_cancel_execution:
                await self._emit(known, ExecutionType.CANCELED)
        if self.hook is not None:
            self.hook("cancel", "after")
        return known.snapshot()

    async def get_order(self, client_order_id: str, refresh: bool, timeout: float) -> ExchangeOrder:
        self._refuse_if_down("get_order")
        self.calls["get_order"] += 1
        known = self.journal.get(client_order_id)
        if known is None:
            raise NotFound(f"unknown order {client_order_id}")
        return known.snapshot()

    async def get_symbol_rules(self, symbol: str, timeout: float) -> SymbolRules:
        self.calls["rules"] += 1
        if symbol not in self.rules:
            raise NotFound(f"unknown symbol {symbol}")
        return self.rules[symbol]

    async def list_symbol_rules(self, timeout: float) -> list[SymbolRules]:
        return list(self.rules.values())

    async def get_last_price(self, symbol: str, timeout: float) -> Decimal:
        self.calls["price"] += 1
        return self.prices[symbol]

    async def stream_executions(self, after_sequence: int) -> AsyncIterator[ExecutionReport]:
        self.calls["stream"] += 1
        position = after_sequence
        while True:
            if self.stream_error is not None:
                error, self.stream_error = self.stream_error, None
                raise error
            if position < len(self.executions):
                await self.flowing.wait()
                report = self.executions[position]
                position += 1
                yield report
                continue
            async with self._changed:
                await self._changed.wait_for(
                    lambda p=position: len(self.executions) > p or self.stream_error is not None
                )

    # --- playing the exchange ---------------------------------------------------------------

    async def _emit(self, known: JournaledOrder, kind: ExecutionType, *, reason: str = "", **trade: object) -> None:
        report = ExecutionReport(
            sequence=len(self.executions) + 1,
            client_order_id=known.order.order_id,
            exchange_order_id=known.exchange_order_id,
            symbol=known.order.symbol,
            execution_type=kind,
            order_status=known.status,
            cumulative_quantity=known.executed,
            cumulative_quote_quantity=known.quote,
            reject_reason=reason,
            transaction_time_ms=1_700_000_000_000 + len(self.executions),
            **trade,  # type: ignore[arg-type]
        )
        self.executions.append(report)
        async with self._changed:
            self._changed.notify_all()

    async def trade(self, order_id: str, quantity: str, price: str) -> ExecutionReport:
        """The exchange fills ``quantity`` at ``price`` (0.1% commission in the asset received)."""
        known = self.journal[order_id]
        qty, px = D(quantity), D(price)
        quote = qty * px
        known.executed += qty
        known.quote += quote
        known.status = (
            ExchangeStatus.FILLED if known.executed >= known.order.quantity else ExchangeStatus.PARTIALLY_FILLED
        )
        if known.order.side is Side.BUY:
            commission, asset = (qty * COMMISSION).quantize(D("0.00000001")), known.order.base_asset
        else:
            commission, asset = (quote * COMMISSION).quantize(D("0.00000001")), known.order.quote_asset
        self.next_trade_id += 1
        await self._emit(
            known,
            ExecutionType.TRADE,
            trade_id=self.next_trade_id,
            last_quantity=qty,
            last_price=px,
            last_quote_quantity=quote,
            commission=commission,
            commission_asset=asset,
        )
        return self.executions[-1]

    async def confirm_cancel(self, order_id: str) -> None:
        """The exchange's late confirmation of a cancel whose answer was not conclusive."""
        known = self.journal[order_id]
        known.status = ExchangeStatus.CANCELED
        await self._emit(known, ExecutionType.CANCELED)

    async def expire(self, order_id: str, reason: str = "IOC remainder") -> None:
        """The exchange expires the order (IOC/FOK rules)."""
        known = self.journal[order_id]
        known.status = ExchangeStatus.EXPIRED
        known.reject_reason = reason
        await self._emit(known, ExecutionType.EXPIRED, reason=reason)

    async def break_stream(self) -> None:
        """End the current stream with UNAVAILABLE (the consumer must reconnect from its cursor)."""
        self.stream_error = Unavailable("stream broken")
        async with self._changed:
            self._changed.notify_all()
