"""The matching engine: one spot account trading against a market price per symbol. Pure: no I/O, no clock of its own.

Model (what a Binance client can observe, kept small):

- Each symbol has a last price. Takers (MARKET orders, marketable LIMIT orders, triggered stops) trade against a
  synthetic book around it: ``levels`` price levels per side starting AT the last price, ``spread`` apart (0.01 % of
  the price, at least one tick), each holding ``level_quantity``. The book is refilled for every order (the market
  is deep and other traders replenish it); what an order needs beyond it expires (INSUFFICIENT_LIQUIDITY).
- Resting LIMIT orders are makers: when the last price reaches their price (BUY: last <= price, SELL: last >= price)
  they fill at their OWN price. ``set_price(..., volume=...)`` caps how much base quantity resting orders may trade
  at one update, which is how a test makes a deterministic partial fill.
- Stops trigger as Binance documents: STOP_LOSS BUY / TAKE_PROFIT SELL when last >= stopPrice; STOP_LOSS SELL /
  TAKE_PROFIT BUY when last <= stopPrice. STOP_LOSS / TAKE_PROFIT then execute as MARKET orders, the *_LIMIT types
  as LIMIT orders at their price. An order that would trigger at once is rejected.
- Commission is the account's rate (0.1 % by default) of the asset received (BUY: base, SELL: quote), rounded
  half-up to 8 decimals. With BNB fees on (``set_commission("BNB")``, Binance's "pay fees with BNB") it is the
  trade's quote value times the rate converted at the BNB/<quote> last price and charged in BNB; a fill that
  finds too little free BNB (or no BNB/<quote> market) pays in the asset received, as on Binance.
- Order ids and trade ids start, per symbol, from the clock (ms since the epoch x 1000) and only increase, so a
  restarted simulator (a fresh ``Exchange``) never hands out an id a client has already seen.
- Balances have free and locked parts. BUY locks quote (price x quantity; stopPrice x quantity for a STOP_LOSS /
  TAKE_PROFIT BUY; the cost of the walk for a MARKET BUY), SELL locks base. A BUY filled below its limit gives the
  difference back at once.

Every mutating method returns the events a user data stream carries (``ExecutionReport``, ``AccountPosition``).
Rejections raise ``BinanceError`` with Binance's code and message.
"""

from __future__ import annotations

import collections
import dataclasses
import random
import string
import time
from bisect import bisect_left, insort
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal

from services.exchange_simulator import errors
from services.exchange_simulator.symbols import DEFAULT_SYMBOLS, SymbolSpec

ZERO = Decimal(0)
Q8 = Decimal("0.00000001")
COMMISSION_RATE = Decimal("0.001")
BNB = "BNB"
COMMISSION_ASSETS = ("", BNB)
"""Where commission is charged: ``""`` in the asset received, ``"BNB"`` in BNB when the account holds enough."""
IDS_PER_MS = 1000
"""First order and trade id of a market: the clock in ms times this, so ids outgrow a restart's."""
SPREAD_RATE = Decimal("0.0001")

BUY = "BUY"
SELL = "SELL"
LIMIT = "LIMIT"
MARKET = "MARKET"
LIMIT_MAKER = "LIMIT_MAKER"
STOP_LOSS = "STOP_LOSS"
STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
TAKE_PROFIT = "TAKE_PROFIT"
TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
GTC = "GTC"
IOC = "IOC"
FOK = "FOK"

NEW = "NEW"
PARTIALLY_FILLED = "PARTIALLY_FILLED"
FILLED = "FILLED"
CANCELED = "CANCELED"
EXPIRED = "EXPIRED"
TRADE = "TRADE"

SIDES = (BUY, SELL)
ORDER_TYPES = (LIMIT, MARKET, LIMIT_MAKER, STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT)
TIME_IN_FORCES = (GTC, IOC, FOK)
STOP_TYPES = frozenset({STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT})
PRICED_TYPES = frozenset({LIMIT, LIMIT_MAKER, STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT})
OPEN_STATUSES = frozenset({NEW, PARTIALLY_FILLED})

_ID_ALPHABET = string.ascii_letters + string.digits


def triggers_above(order_type: str, side: str) -> bool:
    """Whether a stop order triggers when the price rises to its stop (else when it falls to it)."""
    if order_type in (STOP_LOSS, STOP_LOSS_LIMIT):
        return side == BUY
    return side == SELL


def floor_to_step(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` down to a multiple of ``step`` (a zero step leaves it as is)."""
    if step == 0:
        return value
    return (value / step).to_integral_value(rounding=ROUND_DOWN) * step


def is_multiple(value: Decimal, step: Decimal) -> bool:
    """Whether ``value`` is an exact multiple of ``step`` (a zero step means no rule)."""
    return step == 0 or value % step == 0


def commission_of(amount: Decimal, rate: Decimal = COMMISSION_RATE) -> Decimal:
    """``rate`` (0.1 % by default) of ``amount``, rounded half-up to 8 decimals."""
    return (amount * rate).quantize(Q8, rounding=ROUND_HALF_UP)


@dataclass(slots=True)
class NewOrder:
    """A parsed, type-checked new order request (the REST layer has already checked mandatory parameters)."""

    symbol: str
    side: str
    type: str
    quantity: Decimal | None = None
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    client_order_id: str | None = None


@dataclass(slots=True)
class Trade:
    """One execution of the account's order against the market."""

    symbol: str
    id: int
    order_id: int
    price: Decimal
    qty: Decimal
    quote_qty: Decimal
    commission: Decimal
    commission_asset: str
    time: int
    is_buyer: bool
    is_maker: bool


@dataclass(slots=True, eq=False)
class Order:
    """An order as the exchange keeps it."""

    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str
    quantity: Decimal
    price: Decimal
    stop_price: Decimal
    quote_order_qty: Decimal
    time: int
    update_time: int
    working_time: int
    is_working: bool
    seq: int
    lock_asset: str
    locked: Decimal = ZERO
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    status: str = NEW
    expiry_reason: str = "NONE"
    filled_once: bool = False
    trades: list[Trade] = field(default_factory=list)
    book: list[tuple[Decimal, int, int]] | None = None
    book_key: tuple[Decimal, int, int] | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.executed_qty

    @property
    def has_limit_price(self) -> bool:
        return self.type in PRICED_TYPES


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """What an ``executionReport`` event says; ``order`` supplies the fields that never change."""

    order: Order
    event_time: int
    execution_type: str
    status: str
    client_order_id: str
    orig_client_order_id: str
    last_qty: Decimal
    last_price: Decimal
    last_quote: Decimal
    cum_qty: Decimal
    cum_quote: Decimal
    commission: Decimal
    commission_asset: str | None
    trade_id: int
    execution_id: int
    is_working: bool
    is_maker: bool
    working_time: int
    expiry_reason: str | None


@dataclass(frozen=True, slots=True)
class AccountPosition:
    """What an ``outboundAccountPosition`` event says: the balances that changed, (asset, free, locked)."""

    event_time: int
    balances: tuple[tuple[str, Decimal, Decimal], ...]


Event = ExecutionReport | AccountPosition


@dataclass(slots=True)
class Balance:
    free: Decimal = ZERO
    locked: Decimal = ZERO


class Account:
    """Free and locked balances per asset; remembers which assets changed since the last event."""

    def __init__(self, balances: dict[str, Decimal]):
        self.balances: dict[str, Balance] = {asset: Balance(free=Decimal(amount)) for asset, amount in balances.items()}
        self.dirty: dict[str, None] = {}
        self.update_time = 0

    def get(self, asset: str) -> Balance:
        balance = self.balances.get(asset)
        if balance is None:
            balance = self.balances[asset] = Balance()
        return balance

    def free(self, asset: str) -> Decimal:
        balance = self.balances.get(asset)
        return balance.free if balance is not None else ZERO

    def lock(self, asset: str, amount: Decimal) -> None:
        balance = self.get(asset)
        balance.free -= amount
        balance.locked += amount
        self.dirty[asset] = None

    def unlock(self, asset: str, amount: Decimal) -> None:
        if amount == 0:
            return
        balance = self.get(asset)
        balance.locked -= amount
        balance.free += amount
        self.dirty[asset] = None

    def adjust(self, asset: str, free: Decimal = ZERO, locked: Decimal = ZERO) -> None:
        balance = self.get(asset)
        balance.free += free
        balance.locked += locked
        self.dirty[asset] = None

    def take_dirty(self, now: int) -> AccountPosition | None:
        """An AccountPosition for the assets changed since the last call, or None."""
        if not self.dirty:
            return None
        self.update_time = now
        changed = tuple((a, self.balances[a].free, self.balances[a].locked) for a in self.dirty)
        self.dirty = {}
        return AccountPosition(event_time=now, balances=changed)


ORDER_HISTORY = 2_000
"""Final orders kept per symbol for queries; older ones are forgotten, as Binance archives its old orders.
Without a bound the simulator's memory grew with every order (+188% in a 10-minute soak); with 20,000
it still grew by ~90 MB in a 10-minute soak at 100 orders/s. 2,000 per symbol is many minutes of
history at benchmark rates, far more than a client's reconciliation looks back."""
TRADE_HISTORY = 5_000
"""Trades kept per symbol for myTrades."""


class Market:
    """One symbol's price, synthetic liquidity, resting orders and waiting stops."""

    def __init__(self, spec: SymbolSpec, price: Decimal, next_order_id: int = 1, next_trade_id: int = 1):
        self.spec = spec
        self.last_price = price
        self.level_quantity = spec.default_level_quantity
        self.levels = spec.default_levels
        self.next_order_id = next_order_id
        self.next_trade_id = next_trade_id
        # Sorted so that index 0 is the first to match: keys (price key, seq, order id).
        self.bids: list[tuple[Decimal, int, int]] = []  # BUY limits, (-price, ...): highest price first
        self.asks: list[tuple[Decimal, int, int]] = []  # SELL limits, (price, ...): lowest price first
        self.stops_above: list[tuple[Decimal, int, int]] = []  # trigger when last >= stop: (stop, ...)
        self.stops_below: list[tuple[Decimal, int, int]] = []  # trigger when last <= stop: (-stop, ...)
        self.orders: dict[int, Order] = {}  # insertion order is order id order
        self.closed: collections.deque[int] = collections.deque()  # final orders, oldest first
        self.trades: collections.deque[Trade] = collections.deque(maxlen=TRADE_HISTORY)
        self.open_orders: dict[int, Order] = {}
        self.algo_open = 0

    def spread(self) -> Decimal:
        """Distance between the synthetic book's levels: 0.01 % of the price in ticks, at least one tick."""
        tick = self.spec.tick_size
        return max(tick, floor_to_step(self.last_price * SPREAD_RATE, tick))


class Exchange:
    """The in-memory exchange: markets, the account, orders and trades."""

    def __init__(
        self,
        symbols: Iterable[SymbolSpec] = DEFAULT_SYMBOLS,
        balances: dict[str, Decimal] | None = None,
        prices: dict[str, Decimal] | None = None,
        clock: Callable[[], int] | None = None,
        seed: int | None = None,
    ):
        self.specs: dict[str, SymbolSpec] = {spec.symbol: spec for spec in symbols}
        self.clock = clock or _now_ms
        self._rng = random.Random(seed)
        # Hooks for the unfilled order count: called when an order is accepted and on its first fill.
        self.on_accept: Callable[[Order, int], None] | None = None
        self.on_first_fill: Callable[[Order, int], None] | None = None
        self.markets: dict[str, Market] = {}
        self.account = Account({})
        self.open_by_client_id: dict[str, Order] = {}
        self.by_client_id: dict[tuple[str, str], Order] = {}
        self._seq = 0
        self._execution_id = 0
        self.orders_accepted = 0
        self.commission_asset = ""
        self.commission_rate = COMMISSION_RATE
        self.reset(balances or {}, prices)

    def reset(
        self,
        balances: dict[str, Decimal],
        prices: dict[str, Decimal] | None = None,
        *,
        next_order_id: int | None = None,
        next_trade_id: int | None = None,
    ) -> None:
        """Forget all orders and trades; start again from these balances and prices (default: initial prices).

        Ids go on from the clock (ms x 1000), never below the ids already handed out; ``next_order_id`` /
        ``next_trade_id`` set the next ids of every symbol instead (a test's forgetful exchange).
        """
        prices = prices or {}
        clock_id = self.clock() * IDS_PER_MS
        old = self.markets
        self.markets = {
            name: Market(
                spec,
                Decimal(prices.get(name, spec.initial_price)),
                next_order_id=next_order_id
                if next_order_id is not None
                else max(clock_id, old[name].next_order_id if name in old else 0),
                next_trade_id=next_trade_id
                if next_trade_id is not None
                else max(clock_id, old[name].next_trade_id if name in old else 0),
            )
            for name, spec in self.specs.items()
        }
        self.account = Account(balances)
        self.open_by_client_id = {}
        self.by_client_id = {}
        self.orders_accepted = 0

    # ----------------------------------------------------------------------------------------------- queries

    def market(self, symbol: str) -> Market:
        """The market of ``symbol``, or -1121."""
        market = self.markets.get(symbol)
        if market is None:
            raise errors.invalid_symbol()
        return market

    def last_price(self, symbol: str) -> Decimal:
        return self.market(symbol).last_price

    def find_order(self, symbol: str, order_id: int | None = None, client_order_id: str | None = None) -> Order | None:
        """Look an order up by id (then check the client id, as Binance does), else by client order id."""
        market = self.market(symbol)
        if order_id is not None:
            order = market.orders.get(order_id)
            if order is not None and client_order_id is not None and order.client_order_id != client_order_id:
                raise errors.BinanceError(-2039, "Client order ID is not correct for this order ID.")
            return order
        if client_order_id is not None:
            return self.by_client_id.get((symbol, client_order_id))
        raise errors.one_of_mandatory("orderId", "origClientOrderId")

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        """Open orders, oldest first; of one symbol or of all."""
        markets = [self.market(symbol)] if symbol is not None else list(self.markets.values())
        result: list[Order] = []
        for market in markets:
            result.extend(market.open_orders.values())
        return result

    def all_orders(self) -> list[Order]:
        """Every order of every symbol (for the control API)."""
        return [order for market in self.markets.values() for order in market.orders.values()]

    def open_order_count(self) -> int:
        return sum(len(market.open_orders) for market in self.markets.values())

    # ------------------------------------------------------------------------------------------ placing

    def check_filters(self, request: NewOrder) -> None:
        """Raise -1013 for the first filter the order fails, in exchangeInfo's order."""
        market = self.market(request.symbol)
        spec = market.spec
        _check_prices(spec, request)
        _check_quantity(spec, request)
        _check_percent_price(spec, request, market.last_price)
        _check_notional(spec, request, market.last_price)
        if len(market.open_orders) >= spec.max_num_orders:
            raise errors.filter_failure("MAX_NUM_ORDERS")
        if request.type in STOP_TYPES and market.algo_open >= spec.max_num_algo_orders:
            raise errors.filter_failure("MAX_NUM_ALGO_ORDERS")

    def new_client_order_id(self) -> str:
        """A random 22-character id, like Binance generates."""
        return "".join(self._rng.choices(_ID_ALPHABET, k=22))

    def place(self, request: NewOrder, now: int | None = None) -> tuple[Order, list[Event]]:
        """Accept and match a new order, or raise its rejection (-1013, -2010, ...)."""
        now = self.clock() if now is None else now
        market = self.market(request.symbol)
        spec = market.spec
        self.check_filters(request)
        client_order_id = request.client_order_id or self.new_client_order_id()
        if client_order_id in self.open_by_client_id:
            raise errors.order_rejected(errors.DUPLICATE_ORDER)
        side, order_type = request.side, request.type
        stop = request.stop_price if request.stop_price is not None else ZERO
        price = request.price if request.price is not None else ZERO
        _refuse_immediate(order_type, side, market.last_price, stop, price)
        plan, quantity, lock = self._amounts(market, request, stop, price)
        lock_asset = spec.quote if side == BUY else spec.base
        if self.account.free(lock_asset) < lock:
            raise errors.order_rejected(errors.INSUFFICIENT_BALANCE)

        self._seq += 1
        is_stop = order_type in STOP_TYPES
        order = Order(
            symbol=spec.symbol,
            order_id=market.next_order_id,
            client_order_id=client_order_id,
            side=side,
            type=order_type,
            time_in_force=request.time_in_force or GTC,
            quantity=quantity,
            price=price,
            stop_price=stop,
            quote_order_qty=request.quote_order_qty or ZERO,
            time=now,
            update_time=now,
            working_time=-1 if is_stop else now,
            is_working=not is_stop,
            seq=self._seq,
            lock_asset=lock_asset,
        )
        self._book(market, order, lock, now)
        return order, self._start(market, order, plan, now)

    def _amounts(
        self, market: Market, request: NewOrder, stop: Decimal, price: Decimal
    ) -> tuple[list[tuple[Decimal, Decimal]] | None, Decimal, Decimal]:
        """(the book walk of a MARKET order, the quantity, the amount to lock) of a new order."""
        side = request.side
        plan: list[tuple[Decimal, Decimal]] | None = None
        quantity = request.quantity if request.quantity is not None else ZERO
        if request.type == MARKET:
            plan = self._walk(market, side, quantity=request.quantity, quote_budget=request.quote_order_qty)
            if request.quantity is None:
                quantity = sum((q for _, q in plan), ZERO)
                if quantity < market.spec.min_qty:
                    raise errors.order_rejected("Order book liquidity is less than `LOT_SIZE` filter minimum quantity.")
            lock = sum((p * q for p, q in plan), ZERO) if side == BUY else quantity
        elif side == SELL:
            lock = quantity
        elif request.type in PRICED_TYPES:
            lock = price * quantity
        else:  # STOP_LOSS / TAKE_PROFIT BUY: reserve at the stop price; re-reserved at the real cost on trigger
            lock = stop * quantity
        return plan, quantity, lock

    def _book(self, market: Market, order: Order, lock: Decimal, now: int) -> None:
        """Enter an accepted order in the book and the indexes and lock its funds."""
        market.next_order_id += 1
        market.orders[order.order_id] = order
        market.open_orders[order.order_id] = order
        if order.type in STOP_TYPES:
            market.algo_open += 1
        self.open_by_client_id[order.client_order_id] = order
        self.by_client_id[(order.symbol, order.client_order_id)] = order
        self.orders_accepted += 1
        self.account.lock(order.lock_asset, lock)
        order.locked = lock
        if self.on_accept is not None:
            self.on_accept(order, now)

    def _start(self, market: Market, order: Order, plan: list[tuple[Decimal, Decimal]] | None, now: int) -> list[Event]:
        """The new order's first reports: NEW, then what it matches at once (or its armed stop)."""
        events: list[Event] = []
        rests = order.type == LIMIT_MAKER or (order.type == LIMIT and order.time_in_force == GTC)
        events.append(self._report(order, NEW, now, is_working=rests))
        if order.type == MARKET:
            assert plan is not None
            self._take(market, order, plan, now, events)
            if order.is_open:
                self._expire(market, order, "INSUFFICIENT_LIQUIDITY", now, events)
        elif order.type in (LIMIT, LIMIT_MAKER):
            self._work_limit(market, order, now, events)
        else:
            self._arm_stop(market, order)
        self._flush_account(now, events)
        return events

    # ------------------------------------------------------------------------------------------ cancelling

    def cancel(
        self,
        symbol: str,
        *,
        order_id: int | None = None,
        orig_client_order_id: str | None = None,
        new_client_order_id: str | None = None,
        cancel_restrictions: str | None = None,
        now: int | None = None,
    ) -> tuple[Order, str, list[Event]]:
        """Cancel an open order; return it, the cancel's client order id, and the events. -2011 if not open."""
        now = self.clock() if now is None else now
        market = self.market(symbol)
        order = self.find_order(symbol, order_id, orig_client_order_id)
        if order is None or not order.is_open:
            raise errors.unknown_order()
        if (cancel_restrictions == "ONLY_NEW" and order.status != NEW) or (
            cancel_restrictions == "ONLY_PARTIALLY_FILLED" and order.status != PARTIALLY_FILLED
        ):
            raise errors.BinanceError(-2011, "Order was not canceled due to cancel restrictions.")
        cancel_id = new_client_order_id or self.new_client_order_id()
        events: list[Event] = []
        self._close(market, order, CANCELED, now)
        events.append(
            self._report(order, CANCELED, now, client_order_id=cancel_id, orig_client_order_id=order.client_order_id)
        )
        self._flush_account(now, events)
        return order, cancel_id, events

    def cancel_all(self, symbol: str, now: int | None = None) -> tuple[list[tuple[Order, str]], list[Event]]:
        """Cancel every open order of a symbol; -2011 if there is none."""
        now = self.clock() if now is None else now
        orders = self.open_orders(symbol)
        if not orders:
            raise errors.unknown_order()
        result: list[tuple[Order, str]] = []
        events: list[Event] = []
        for order in orders:
            cancelled, cancel_id, order_events = self.cancel(symbol, order_id=order.order_id, now=now)
            result.append((cancelled, cancel_id))
            events.extend(order_events)
        return result, events

    # ------------------------------------------------------------------------------------------ the market

    def set_order_limits(self, max_num_orders: int | None = None, max_num_algo_orders: int | None = None) -> None:
        """Change the MAX_NUM_ORDERS / MAX_NUM_ALGO_ORDERS filters of every symbol (until the next reset)."""
        for market in self.markets.values():
            spec = market.spec
            market.spec = dataclasses.replace(
                spec,
                max_num_orders=spec.max_num_orders if max_num_orders is None else max_num_orders,
                max_num_algo_orders=spec.max_num_algo_orders if max_num_algo_orders is None else max_num_algo_orders,
            )

    def set_commission(self, asset: str, rate: Decimal | None = None) -> None:
        """Charge commission in ``asset`` (``""``: the asset received; ``"BNB"``) at ``rate`` (unchanged if None)."""
        if asset not in COMMISSION_ASSETS:
            raise ValueError(f"commission asset must be one of {COMMISSION_ASSETS}, got {asset!r}")
        if rate is not None:
            if not rate.is_finite() or not 0 <= rate < 1:
                raise ValueError(f"commission rate must be at least 0 and below 1, got {rate}")
            self.commission_rate = rate
        self.commission_asset = asset

    def set_liquidity(self, symbol: str, level_quantity: Decimal | None = None, levels: int | None = None) -> None:
        """Change the synthetic book that takers meet."""
        market = self.market(symbol)
        if level_quantity is not None:
            market.level_quantity = floor_to_step(level_quantity, market.spec.step_size)
        if levels is not None:
            market.levels = levels

    def set_price(
        self, symbol: str, price: Decimal, volume: Decimal | None = None, now: int | None = None
    ) -> list[Event]:
        """Move the last price, trigger stops and fill crossed resting orders (at most ``volume`` base in total)."""
        now = self.clock() if now is None else now
        market = self.market(symbol)
        market.last_price = price
        events: list[Event] = []
        self._trigger_stops(market, now, events)
        self._match_resting(market, volume, now, events)
        return events

    # ------------------------------------------------------------------------------------------ internals

    def _walk(
        self,
        market: Market,
        side: str,
        quantity: Decimal | None = None,
        quote_budget: Decimal | None = None,
        limit: Decimal | None = None,
    ) -> list[tuple[Decimal, Decimal]]:
        """The (price, quantity) trades a taker gets from the synthetic book, best level first."""
        step = market.spec.step_size
        spread = market.spread()
        price = market.last_price
        plan: list[tuple[Decimal, Decimal]] = []
        remaining = quantity
        budget = quote_budget
        for _ in range(market.levels):
            if price <= 0 or (limit is not None and not _crosses(side, limit, price)):
                break
            if remaining is not None:
                qty = min(market.level_quantity, remaining)
            else:
                assert budget is not None
                qty = min(market.level_quantity, floor_to_step(budget / price, step))
            if qty <= 0:
                break
            plan.append((price, qty))
            if remaining is not None:
                remaining -= qty
                if remaining <= 0:
                    break
            else:
                assert budget is not None
                budget -= price * qty
            price = price + spread if side == BUY else price - spread
        return plan

    def _take(
        self, market: Market, order: Order, plan: list[tuple[Decimal, Decimal]], now: int, events: list[Event]
    ) -> None:
        for price, qty in plan:
            self._fill(market, order, price, qty, maker=False, now=now, events=events)

    def _work_limit(self, market: Market, order: Order, now: int, events: list[Event]) -> None:
        """Take what a marketable limit can at or better than its price, then rest (GTC) or expire (IOC/FOK)."""
        if order.type != LIMIT_MAKER and _crosses(order.side, order.price, market.last_price):
            plan = self._walk(market, order.side, quantity=order.remaining, limit=order.price)
            if order.time_in_force == FOK and sum((q for _, q in plan), ZERO) < order.remaining:
                self._expire(market, order, "UNFILLED_FOK_ORDER_EXPIRED", now, events)
                return
            self._take(market, order, plan, now, events)
        if not order.is_open:
            return
        if order.time_in_force == IOC:
            self._expire(market, order, "UNFILLED_IOC_QUANTITY_EXPIRED", now, events)
        elif order.time_in_force == FOK:
            self._expire(market, order, "UNFILLED_FOK_ORDER_EXPIRED", now, events)
        else:
            order.is_working = True
            if order.side == BUY:
                self._insert(market.bids, order, -order.price)
            else:
                self._insert(market.asks, order, order.price)

    def _arm_stop(self, market: Market, order: Order) -> None:
        if triggers_above(order.type, order.side):
            self._insert(market.stops_above, order, order.stop_price)
        else:
            self._insert(market.stops_below, order, -order.stop_price)

    @staticmethod
    def _insert(book: list[tuple[Decimal, int, int]], order: Order, key: Decimal) -> None:
        entry = (key, order.seq, order.order_id)
        insort(book, entry)
        order.book = book
        order.book_key = entry

    @staticmethod
    def _remove(order: Order) -> None:
        book, key = order.book, order.book_key
        if book is None or key is None:
            return
        index = bisect_left(book, key)
        if index < len(book) and book[index] == key:
            del book[index]
        order.book = None
        order.book_key = None

    def _trigger_stops(self, market: Market, now: int, events: list[Event]) -> None:
        price = market.last_price
        triggered: list[Order] = []
        while market.stops_above and market.stops_above[0][0] <= price:
            triggered.append(market.orders[market.stops_above[0][2]])
            self._remove(triggered[-1])
        while market.stops_below and -market.stops_below[0][0] >= price:
            triggered.append(market.orders[market.stops_below[0][2]])
            self._remove(triggered[-1])
        for order in sorted(triggered, key=lambda o: o.seq):
            order.is_working = True
            order.working_time = now
            order.update_time = now
            if order.type in (STOP_LOSS, TAKE_PROFIT):
                plan = self._walk(market, order.side, quantity=order.remaining)
                if order.side == BUY:
                    # Re-reserve at the real cost of the walk instead of the stop price.
                    cost = sum((p * q for p, q in plan), ZERO)
                    self.account.unlock(order.lock_asset, order.locked)
                    order.locked = ZERO
                    if self.account.free(order.lock_asset) < cost:
                        self._expire(market, order, "NONE", now, events)
                        self._flush_account(now, events)
                        continue
                    self.account.lock(order.lock_asset, cost)
                    order.locked = cost
                self._take(market, order, plan, now, events)
                if order.is_open:
                    self._expire(market, order, "INSUFFICIENT_LIQUIDITY", now, events)
            else:
                self._work_limit(market, order, now, events)
            self._flush_account(now, events)

    def _match_resting(self, market: Market, volume: Decimal | None, now: int, events: list[Event]) -> None:
        price = market.last_price
        step = market.spec.step_size
        left = volume
        for book, is_buy in ((market.bids, True), (market.asks, False)):
            while book and (left is None or left > 0):
                key, _, order_id = book[0]
                limit = -key if is_buy else key
                if (is_buy and price > limit) or (not is_buy and price < limit):
                    break
                order = market.orders[order_id]
                qty = order.remaining if left is None else min(order.remaining, floor_to_step(left, step))
                if qty <= 0:
                    break
                self._fill(market, order, limit, qty, maker=True, now=now, events=events)
                self._flush_account(now, events)
                if left is not None:
                    left -= qty

    def _fill(
        self, market: Market, order: Order, price: Decimal, qty: Decimal, *, maker: bool, now: int, events: list[Event]
    ) -> None:
        spec = market.spec
        quote = price * qty
        self._move_funds(spec, order, price, qty, quote)
        commission_asset, commission = self._commission(spec, qty, quote, order.side)
        if commission:
            self.account.adjust(commission_asset, free=-commission)
        trade = Trade(
            symbol=spec.symbol,
            id=market.next_trade_id,
            order_id=order.order_id,
            price=price,
            qty=qty,
            quote_qty=quote,
            commission=commission,
            commission_asset=commission_asset,
            time=now,
            is_buyer=order.side == BUY,
            is_maker=maker,
        )
        market.next_trade_id += 1
        market.trades.append(trade)
        order.trades.append(trade)
        order.executed_qty += qty
        order.cum_quote += quote
        order.update_time = now
        first_fill = not order.filled_once
        order.filled_once = True
        if order.executed_qty >= order.quantity:
            self._close(market, order, FILLED, now)
        else:
            order.status = PARTIALLY_FILLED
        self._execution_id += 1
        events.append(_trade_report(order, trade, self._execution_id))
        if first_fill and self.on_first_fill is not None:
            self.on_first_fill(order, now)

    def _move_funds(self, spec: SymbolSpec, order: Order, price: Decimal, qty: Decimal, quote: Decimal) -> None:
        """A fill's own balance changes: the order's locked funds paid out, the bought asset credited."""
        account = self.account
        if order.side == BUY:
            release = (order.price if order.has_limit_price else price) * qty
            order.locked -= release
            account.adjust(spec.quote, free=release - quote, locked=-release)
            account.adjust(spec.base, free=qty)
        else:
            order.locked -= qty
            account.adjust(spec.base, locked=-qty)
            account.adjust(spec.quote, free=quote)

    def _commission(self, spec: SymbolSpec, qty: Decimal, quote: Decimal, side: str) -> tuple[str, Decimal]:
        """(asset, amount) of a fill's commission, decided after the fill's own balance changes are applied."""
        rate = self.commission_rate
        if self.commission_asset == BNB:
            bnb_price = Decimal(1) if spec.quote == BNB else self._bnb_price(spec.quote)
            if bnb_price is not None:
                in_bnb = (quote * rate / bnb_price).quantize(Q8, rounding=ROUND_HALF_UP)
                if self.account.free(BNB) >= in_bnb:
                    return BNB, in_bnb
        if side == BUY:
            return spec.base, commission_of(qty, rate)
        return spec.quote, commission_of(quote, rate)

    def _bnb_price(self, quote_asset: str) -> Decimal | None:
        """The last price of BNB in ``quote_asset``, or None when no BNB/<quote> market is listed."""
        for market in self.markets.values():
            if market.spec.base == BNB and market.spec.quote == quote_asset:
                return market.last_price
        return None

    def _close(self, market: Market, order: Order, status: str, now: int) -> None:
        """Take an order off the books in a final status and give back what it still has locked."""
        order.status = status
        order.update_time = now
        self._remove(order)
        if order.locked:
            self.account.unlock(order.lock_asset, order.locked)
            order.locked = ZERO
        market.open_orders.pop(order.order_id, None)
        if order.type in STOP_TYPES:
            market.algo_open -= 1
        if self.open_by_client_id.get(order.client_order_id) is order:
            del self.open_by_client_id[order.client_order_id]
        market.closed.append(order.order_id)
        while len(market.closed) > ORDER_HISTORY:
            self._forget(market, market.closed.popleft())

    def _forget(self, market: Market, order_id: int) -> None:
        """Drop a long-final order from memory (queries for it then answer 'Order does not exist.')."""
        old = market.orders.pop(order_id, None)
        if old is not None and self.by_client_id.get((market.spec.symbol, old.client_order_id)) is old:
            del self.by_client_id[(market.spec.symbol, old.client_order_id)]

    def _expire(self, market: Market, order: Order, reason: str, now: int, events: list[Event]) -> None:
        order.expiry_reason = reason
        self._close(market, order, EXPIRED, now)
        events.append(self._report(order, EXPIRED, now, expiry_reason=reason))

    def _report(
        self,
        order: Order,
        execution_type: str,
        now: int,
        *,
        is_working: bool = False,
        client_order_id: str | None = None,
        orig_client_order_id: str = "",
        expiry_reason: str | None = None,
    ) -> ExecutionReport:
        self._execution_id += 1
        return ExecutionReport(
            order=order,
            event_time=now,
            execution_type=execution_type,
            status=order.status,
            client_order_id=client_order_id or order.client_order_id,
            orig_client_order_id=orig_client_order_id,
            last_qty=ZERO,
            last_price=ZERO,
            last_quote=ZERO,
            cum_qty=order.executed_qty,
            cum_quote=order.cum_quote,
            commission=ZERO,
            commission_asset=None,
            trade_id=-1,
            execution_id=self._execution_id,
            is_working=is_working,
            is_maker=False,
            working_time=order.working_time,
            expiry_reason=expiry_reason,
        )

    def _flush_account(self, now: int, events: list[Event]) -> None:
        position = self.account.take_dirty(now)
        if position is not None:
            events.append(position)


def _refuse_immediate(order_type: str, side: str, last: Decimal, stop: Decimal, price: Decimal) -> None:
    """A stop that would trigger at once, or a LIMIT_MAKER that would take, is rejected (-2010)."""
    if order_type in STOP_TYPES:
        above = triggers_above(order_type, side)
        if (above and last >= stop) or (not above and last <= stop):
            raise errors.order_rejected(errors.WOULD_TRIGGER)
    if order_type == LIMIT_MAKER and _crosses(side, price, last):
        raise errors.order_rejected(errors.WOULD_TAKE)


def _check_prices(spec: SymbolSpec, request: NewOrder) -> None:
    """PRICE_FILTER: the price and the stop price within bounds and on the tick."""
    prices: list[Decimal] = []
    if request.type in PRICED_TYPES and request.price is not None:
        prices.append(request.price)
    if request.type in STOP_TYPES and request.stop_price is not None:
        prices.append(request.stop_price)
    for price in prices:
        if (
            (spec.min_price and price < spec.min_price)
            or (spec.max_price and price > spec.max_price)
            or not is_multiple(price, spec.tick_size)
        ):
            raise errors.filter_failure("PRICE_FILTER")


def _check_quantity(spec: SymbolSpec, request: NewOrder) -> None:
    """LOT_SIZE, then MARKET_LOT_SIZE for a MARKET order."""
    qty = request.quantity
    if qty is None:
        return
    if qty < spec.min_qty or qty > spec.max_qty or qty <= 0 or not is_multiple(qty, spec.step_size):
        raise errors.filter_failure("LOT_SIZE")
    if request.type == MARKET and (
        qty < spec.market_min_qty
        or (spec.market_max_qty and qty > spec.market_max_qty)
        or not is_multiple(qty, spec.market_step_size)
    ):
        raise errors.filter_failure("MARKET_LOT_SIZE")


def _check_percent_price(spec: SymbolSpec, request: NewOrder, average: Decimal) -> None:
    """PERCENT_PRICE_BY_SIDE: a priced order's price within its side's band around the average price."""
    if request.type not in PRICED_TYPES or request.price is None:
        return
    if request.side == BUY:
        low, high = average * spec.bid_multiplier_down, average * spec.bid_multiplier_up
    else:
        low, high = average * spec.ask_multiplier_down, average * spec.ask_multiplier_up
    if not low <= request.price <= high:
        raise errors.filter_failure("PERCENT_PRICE_BY_SIDE")


def _check_notional(spec: SymbolSpec, request: NewOrder, average: Decimal) -> None:
    """NOTIONAL: price times quantity (a MARKET order's at the average price, a stop's at its stop price)."""
    qty = request.quantity
    notional: Decimal | None = None
    is_market_like = False
    if request.type in PRICED_TYPES and request.price is not None and qty is not None:
        notional = request.price * qty
    elif request.type == MARKET:
        is_market_like = True
        notional = request.quote_order_qty if request.quote_order_qty is not None else average * (qty or ZERO)
    elif request.stop_price is not None and qty is not None:
        is_market_like = True
        notional = request.stop_price * qty
    if notional is None:
        return
    check_min = spec.apply_min_to_market or not is_market_like
    check_max = spec.apply_max_to_market or not is_market_like
    if (check_min and notional < spec.min_notional) or (check_max and notional > spec.max_notional):
        raise errors.filter_failure("NOTIONAL")


def _trade_report(order: Order, trade: Trade, execution_id: int) -> ExecutionReport:
    """The TRADE execution report of ``trade``, with the order's state after it."""
    return ExecutionReport(
        order=order,
        event_time=trade.time,
        execution_type=TRADE,
        status=order.status,
        client_order_id=order.client_order_id,
        orig_client_order_id="",
        last_qty=trade.qty,
        last_price=trade.price,
        last_quote=trade.quote_qty,
        cum_qty=order.executed_qty,
        cum_quote=order.cum_quote,
        commission=trade.commission,
        commission_asset=trade.commission_asset,
        trade_id=trade.id,
        execution_id=execution_id,
        is_working=order.book is not None,
        is_maker=trade.is_maker,
        working_time=order.working_time,
        expiry_reason=None,
    )


def _crosses(side: str, price: Decimal, last: Decimal) -> bool:
    """Whether a limit at ``price`` would trade at once against the market at ``last``."""
    return price >= last if side == BUY else price <= last


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
