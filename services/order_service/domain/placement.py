"""Validation of a new order against the symbol's rules, and the amount to reserve for it.

Everything is checked before anything is reserved; each failure is an InvalidArgument naming the
request field, so a client knows exactly what to fix. The symbol's rules are the gateway's, in its
contract's terms (``SymbolRules``: whether the symbol trades, the types it takes, and limits and
increments stated as SubmitOrder applies them), applied to the order as the user placed it; the
rules that are this service's own (client_order_id, expire_time, LIMIT_MAKER resting, a market buy's
capped type) are checked here only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import CTX, QUANTUM, floor_to_step, fmt, is_multiple, mul, parse_decimal

from .model import (
    MARKET_TYPES,
    PRICED_TYPES,
    TIME_IN_FORCE_TYPES,
    TRIGGERED_TYPES,
    Order,
    OrderType,
    Side,
    Submission,
    SymbolRules,
    TimeInForce,
)

CLIENT_ORDER_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
SYMBOL = re.compile(r"^[A-Z0-9]{2,30}$")

# What a capped buy of a market type is sent as (see ``submission``).
CAPPED_BUY_TYPE = {
    OrderType.MARKET: OrderType.LIMIT,
    OrderType.STOP: OrderType.STOP_LIMIT,
    OrderType.TAKE_PROFIT: OrderType.TAKE_PROFIT_LIMIT,
}


@dataclass(frozen=True)
class NewOrderRequest:
    """A PlaceOrder request as the API decoded it; enums are None when unset."""

    symbol: str
    side: Side | None
    type: OrderType | None
    quantity: str
    price: str = ""
    stop_price: str = ""
    time_in_force: TimeInForce | None = None
    expire_time_ms: int | None = None
    client_order_id: str = ""


@dataclass(frozen=True)
class ValidOrder:
    """A request that passed every check, with exact values."""

    symbol: str
    side: Side
    type: OrderType
    time_in_force: TimeInForce
    quantity: Decimal
    price: Decimal | None
    stop_price: Decimal | None
    expire_time_ms: int | None
    client_order_id: str


def check_symbol(symbol: str) -> str:
    """Check the symbol's spelling (whether it exists is the rules' business)."""
    if not symbol:
        raise InvalidArgument("symbol", "is required")
    if not SYMBOL.match(symbol):
        raise InvalidArgument("symbol", "must be upper-case letters and digits, for example BTCUSDT")
    return symbol


def allows(rules: SymbolRules, type_: OrderType) -> bool:
    """Whether the gateway accepts ``type_`` on the symbol (it lists no types when every type goes)."""
    return not rules.order_types or type_ in rules.order_types


def needs_reference_price(side: Side | None, type_: OrderType | None, rules: SymbolRules) -> bool:
    """Whether validation or the reservation needs the last price (market types, and LIMIT_MAKER's post-only check)."""
    if type_ is OrderType.LIMIT_MAKER:
        return True
    if type_ not in MARKET_TYPES:
        return False
    if type_ is OrderType.MARKET and (rules.apply_min_to_market or rules.apply_max_to_market):
        return True
    return side is Side.BUY


def validate(request: NewOrderRequest, rules: SymbolRules, now_ms: int, last_price: Decimal | None) -> ValidOrder:
    """Check every field of ``request`` against ``rules``; raise InvalidArgument naming the first bad field."""
    check_symbol(request.symbol)
    if not rules.trading:
        raise FailedPrecondition(
            f"{request.symbol} is not trading (status {rules.status})", reason="SYMBOL_NOT_TRADING"
        )
    if request.side is None:
        raise InvalidArgument("side", "is required: ORDER_SIDE_BUY or ORDER_SIDE_SELL")
    if request.type is None:
        raise InvalidArgument(
            "type",
            "is required: ORDER_TYPE_MARKET, _LIMIT, _STOP, _STOP_LIMIT, _TAKE_PROFIT, _TAKE_PROFIT_LIMIT "
            "or _LIMIT_MAKER",
        )
    type_ = request.type
    if not allows(rules, type_):
        raise InvalidArgument("type", f"{type_} orders are not allowed on {request.symbol}")
    if request.side is Side.BUY and type_ in CAPPED_BUY_TYPE and not allows(rules, CAPPED_BUY_TYPE[type_]):
        # A market-type buy is sent as a limit at its price cap (see ``submission``).
        raise InvalidArgument("type", f"{type_} buys are not possible on {request.symbol} (no capped limit type)")

    tif = _time_in_force(type_, request.time_in_force)

    if request.client_order_id and not CLIENT_ORDER_ID.match(request.client_order_id):
        raise InvalidArgument("client_order_id", "must be 1 to 64 characters of [A-Za-z0-9_.:-]")

    quantity = parse_decimal(request.quantity, "quantity")
    _check_quantity(quantity, rules.min_quantity, rules.max_quantity, rules.step_size)
    if type_ in MARKET_TYPES:
        _check_quantity(quantity, rules.market_min_quantity, rules.market_max_quantity, rules.market_step_size)

    price = _price_field(request.price, "price", type_ in PRICED_TYPES, type_, rules)
    stop_price = _price_field(request.stop_price, "stop_price", type_ in TRIGGERED_TYPES, type_, rules)

    if request.expire_time_ms is not None and request.expire_time_ms <= now_ms:
        raise InvalidArgument("expire_time", "must be in the future")

    _check_value(type_, quantity, price=price, stop_price=stop_price, last_price=last_price, rules=rules)
    if type_ is OrderType.LIMIT_MAKER:
        _check_post_only(request.side, price, last_price)

    return ValidOrder(
        symbol=request.symbol,
        side=request.side,
        type=type_,
        time_in_force=tif,
        quantity=quantity,
        price=price,
        stop_price=stop_price,
        expire_time_ms=request.expire_time_ms,
        client_order_id=request.client_order_id,
    )


def _time_in_force(type_: OrderType, requested: TimeInForce | None) -> TimeInForce:
    """GTC by default for the types that take one; unset (NONE) for the others, which refuse one."""
    if type_ in TIME_IN_FORCE_TYPES:
        tif = requested or TimeInForce.GTC
        return TimeInForce.GTC if tif is TimeInForce.NONE else tif
    if requested not in (None, TimeInForce.NONE):
        raise InvalidArgument("time_in_force", f"must be unset for {type_} orders")
    return TimeInForce.NONE


def _check_value(
    type_: OrderType,
    quantity: Decimal,
    *,
    price: Decimal | None,
    stop_price: Decimal | None,
    last_price: Decimal | None,
    rules: SymbolRules,
) -> None:
    """The NOTIONAL rule on the order's value."""
    # The order's value: limit types at their price; market types (when the symbol applies the limits to
    # them) at the price they would trade at: the last price for MARKET, the trigger for STOP.
    if price is not None:
        _check_notional(mul(price, quantity), rules.min_notional, rules.max_notional, True, True)
    elif type_ in (OrderType.STOP, OrderType.TAKE_PROFIT) and stop_price is not None:
        _check_notional(
            mul(stop_price, quantity),
            rules.min_notional,
            rules.max_notional,
            rules.apply_min_to_market,
            rules.apply_max_to_market,
        )
    elif last_price is not None:
        _check_notional(
            mul(last_price, quantity),
            rules.min_notional,
            rules.max_notional,
            rules.apply_min_to_market,
            rules.apply_max_to_market,
        )


def _check_post_only(side: Side, price: Decimal | None, last_price: Decimal | None) -> None:
    """Post-only: a LIMIT_MAKER order that would trade at once is refused before anything is reserved."""
    if price is None or last_price is None or last_price <= 0:
        return
    takes = price >= last_price if side is Side.BUY else price <= last_price
    if takes:
        where = "at or above" if side is Side.BUY else "at or below"
        raise InvalidArgument(
            "price",
            f"a LIMIT_MAKER {side} {where} the market ({fmt(last_price)}) would take liquidity; it must rest",
        )


def _check_quantity(quantity: Decimal, minimum: Decimal, maximum: Decimal, step: Decimal) -> None:
    if minimum and quantity < minimum:
        raise InvalidArgument("quantity", f"must be at least {fmt(minimum)}")
    if maximum and quantity > maximum:
        raise InvalidArgument("quantity", f"must be at most {fmt(maximum)}")
    if not is_multiple(quantity, step):
        raise InvalidArgument("quantity", f"must be a multiple of the step size {fmt(step)}")


def _price_field(text: str, field: str, required: bool, type_: OrderType, rules: SymbolRules) -> Decimal | None:
    if not required:
        if text:
            raise InvalidArgument(field, f"must be empty for {type_} orders")
        return None
    if not text:
        raise InvalidArgument(field, f"is required for {type_} orders")
    value = parse_decimal(text, field)
    if rules.min_price and value < rules.min_price:
        raise InvalidArgument(field, f"must be at least {fmt(rules.min_price)}")
    if rules.max_price and value > rules.max_price:
        raise InvalidArgument(field, f"must be at most {fmt(rules.max_price)}")
    if not is_multiple(value, rules.tick_size):
        raise InvalidArgument(field, f"must be a multiple of the tick size {fmt(rules.tick_size)}")
    return value


def _check_notional(notional: Decimal, minimum: Decimal, maximum: Decimal, apply_min: bool, apply_max: bool) -> None:
    # The request has no notional field: quantity is what the caller changes to meet it.
    if apply_min and minimum and notional < minimum:
        raise InvalidArgument("quantity", f"notional (price x quantity) {fmt(notional)} is below {fmt(minimum)}")
    if apply_max and maximum and notional > maximum:
        raise InvalidArgument("quantity", f"notional (price x quantity) {fmt(notional)} is above {fmt(maximum)}")


def ceil_to_scale(value: Decimal) -> Decimal:
    """Round up to 8 decimal places: a reservation must cover the cost, never fall short by rounding."""
    return value.quantize(QUANTUM, rounding=ROUND_CEILING, context=CTX)


def reservation(
    order: ValidOrder, rules: SymbolRules, last_price: Decimal | None, protection: Decimal
) -> tuple[str, Decimal]:
    """The asset and amount to reserve for ``order``.

    BUY with a limit price (LIMIT, STOP_LIMIT, TAKE_PROFIT_LIMIT, LIMIT_MAKER): price x quantity of the
    quote asset. BUY MARKET: last price x quantity x (1 + protection); BUY STOP and TAKE_PROFIT: the
    higher of the last and the stop price, likewise (a buy stop triggers at or above its stop, a buy
    take-profit at or below it: the higher of the two covers both). SELL: the quantity of the base
    asset. Rounded up to 8 places.
    """
    if order.side is Side.SELL:
        return rules.base_asset, order.quantity
    if order.type in PRICED_TYPES:
        assert order.price is not None
        return rules.quote_asset, ceil_to_scale(mul(order.price, order.quantity))
    if last_price is None or last_price <= 0:
        raise FailedPrecondition(f"no last price for {order.symbol} to reserve a market buy", reason="NO_PRICE")
    estimate = last_price
    if order.type in TRIGGERED_TYPES and order.stop_price is not None:
        estimate = max(last_price, order.stop_price)
    return rules.quote_asset, ceil_to_scale(mul(mul(estimate, order.quantity), 1 + protection))


def price_cap(order: Order, tick_size: Decimal) -> Decimal:
    """The highest price a MARKET or STOP buy may trade at: its reservation per unit, down to the tick.

    ``price_cap x quantity <= reserve_amount``, so the buy can never cost more than was reserved
    (the user's fee is charged in the asset received, never in the quote). Deterministic in the
    order's stored figures, so a resubmission after a crash sends exactly the same request.
    """
    per_unit = CTX.divide(order.reserve_amount, order.quantity)
    return floor_to_step(per_unit, tick_size) if tick_size > 0 else floor_to_step(per_unit, QUANTUM)


def submission(order: Order, tick_size: Decimal) -> Submission:
    """What to send to the gateway for ``order``.

    A MARKET buy goes out as LIMIT IOC at its price cap, a STOP buy as STOP_LIMIT IOC at it: the
    exchange itself then refuses to spend more than the reservation. When the cap binds, the order
    fills what it can at or below the cap and the rest expires (PARTIALLY_FILLED, then EXPIRED with
    what was not spent released). Sells and limit types are sent as placed.
    """
    if order.side is Side.BUY and order.type in CAPPED_BUY_TYPE:
        return Submission(
            type=CAPPED_BUY_TYPE[order.type],
            time_in_force=TimeInForce.IOC,
            price=price_cap(order, tick_size),
            stop_price=order.stop_price,
        )
    return Submission(order.type, order.time_in_force, order.price, order.stop_price)


def differing_field(order: Order, request: ValidOrder) -> str | None:
    """The first request field in which ``request`` asks for something else than ``order``; None if the same.

    A client_order_id names one order: a request that reuses it must be the same request (the
    reservation, which depends on the market at the time, is not part of it).
    """
    pairs: tuple[tuple[str, object, object], ...] = (
        ("symbol", order.symbol, request.symbol),
        ("side", order.side, request.side),
        ("type", order.type, request.type),
        ("quantity", order.quantity, request.quantity),
        ("price", order.price, request.price),
        ("stop_price", order.stop_price, request.stop_price),
        ("time_in_force", order.time_in_force, request.time_in_force),
        ("expire_time", order.expire_time_ms, request.expire_time_ms),
    )
    for name, mine, theirs in pairs:
        if mine != theirs:
            return name
    return None
