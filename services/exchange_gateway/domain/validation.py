"""Checks a SubmitOrder request before a request is spent on it.

``parse_request`` checks the shape (client order id, required and forbidden fields per type,
decimal syntax); ``check_filters`` checks the symbol's exchangeInfo filters the way the exchange
would (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, NOTIONAL / MIN_NOTIONAL, PERCENT_PRICE_BY_SIDE,
PERCENT_PRICE), so that an order Binance would refuse with -1013 gets a clear INVALID_ARGUMENT
naming the field instead, with nothing sent.
"""

from __future__ import annotations

from decimal import Decimal

from services.exchange_gateway.domain.model import (
    CLIENT_ORDER_ID,
    LIMIT_TYPES,
    MARKET_LIKE,
    STOP_TYPES,
    TIME_IN_FORCE_TYPES,
    OrderRequest,
    OrderType,
    Side,
    SymbolRules,
    TimeInForce,
)
from shared.errors import FailedPrecondition, InvalidArgument
from shared.money import CTX, is_multiple, parse_decimal


def plain(value: Decimal) -> str:
    """A decimal without exponent or trailing zeros, for messages and for Binance parameters."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def check_client_order_id(client_order_id: str) -> str:
    """Return the id if it is 1 to 36 characters of [A-Za-z0-9_-], else raise InvalidArgument."""
    if not CLIENT_ORDER_ID.match(client_order_id or ""):
        raise InvalidArgument("client_order_id", "must be 1 to 36 characters of [A-Za-z0-9_-]")
    return client_order_id


def parse_request(
    *,
    client_order_id: str,
    symbol: str,
    side: Side | None,
    type: OrderType | None,
    time_in_force: TimeInForce | None,
    quantity: str,
    price: str,
    stop_price: str,
) -> OrderRequest:
    """Build an OrderRequest from wire values, or raise InvalidArgument naming the field."""
    check_client_order_id(client_order_id)
    if not symbol:
        raise InvalidArgument("symbol", "is required")
    if side is None:
        raise InvalidArgument("side", "is required (SIDE_BUY or SIDE_SELL)")
    if type is None:
        raise InvalidArgument("type", "is required")
    qty = parse_decimal(quantity, "quantity")
    limit_price, tif = _limit_price_and_tif(type, price, time_in_force)
    trigger = _trigger(type, stop_price)
    return OrderRequest(client_order_id, symbol, side, type, tif, qty, limit_price, trigger)


def _limit_price_and_tif(
    type: OrderType, price: str, time_in_force: TimeInForce | None
) -> tuple[Decimal | None, TimeInForce | None]:
    """The limit price and time in force of a ``type`` order: required, defaulted (GTC) or refused."""
    if type not in LIMIT_TYPES:
        if price:
            raise InvalidArgument("price", f"must be empty for {type.value} orders")
        if time_in_force is not None:
            raise InvalidArgument("time_in_force", f"must be unset for {type.value} orders")
        return None, None
    if not price:
        raise InvalidArgument("price", f"is required for {type.value} orders")
    limit_price = parse_decimal(price, "price")
    if type in TIME_IN_FORCE_TYPES:
        return limit_price, time_in_force or TimeInForce.GTC
    if time_in_force is not None:
        raise InvalidArgument("time_in_force", f"must be unset for {type.value} orders")
    return limit_price, None


def _trigger(type: OrderType, stop_price: str) -> Decimal | None:
    """The stop price of a stop order (required), refused for any other type."""
    if type in STOP_TYPES:
        if not stop_price:
            raise InvalidArgument("stop_price", f"is required for {type.value} orders")
        return parse_decimal(stop_price, "stop_price")
    if stop_price:
        raise InvalidArgument("stop_price", f"must be empty for {type.value} orders")
    return None


def needs_last_price(request: OrderRequest, rules: SymbolRules) -> bool:
    """Whether the filter checks of ``request`` use the current price (market notional, percent price)."""
    if request.type is OrderType.MARKET:
        return bool(rules.min_notional and rules.apply_min_to_market) or bool(
            rules.max_notional and rules.apply_max_to_market
        )
    if request.price is None:
        return False
    return any(
        (
            rules.bid_multiplier_up,
            rules.bid_multiplier_down,
            rules.ask_multiplier_up,
            rules.ask_multiplier_down,
            rules.multiplier_up,
            rules.multiplier_down,
        )
    )


def _check_price(field: str, value: Decimal, rules: SymbolRules) -> None:
    if rules.min_price and value < rules.min_price:
        raise InvalidArgument(
            field, f"{plain(value)} is below the minimum price {plain(rules.min_price)} (PRICE_FILTER)"
        )
    if rules.max_price and value > rules.max_price:
        raise InvalidArgument(
            field, f"{plain(value)} is above the maximum price {plain(rules.max_price)} (PRICE_FILTER)"
        )
    if not is_multiple(value, rules.tick_size):
        raise InvalidArgument(
            field, f"{plain(value)} is not a multiple of the tick size {plain(rules.tick_size)} (PRICE_FILTER)"
        )


def _check_lot(value: Decimal, low: Decimal, high: Decimal, step: Decimal, name: str) -> None:
    if low and value < low:
        raise InvalidArgument("quantity", f"{plain(value)} is below the minimum quantity {plain(low)} ({name})")
    if high and value > high:
        raise InvalidArgument("quantity", f"{plain(value)} is above the maximum quantity {plain(high)} ({name})")
    if not is_multiple(value, step):
        raise InvalidArgument("quantity", f"{plain(value)} is not a multiple of the step size {plain(step)} ({name})")


def check_filters(request: OrderRequest, rules: SymbolRules, last_price: Decimal | None) -> None:
    """Raise InvalidArgument (or FailedPrecondition for a symbol that is not trading) like Binance's filters.

    ``last_price`` stands in for the exchange's average / reference price of PERCENT_PRICE_BY_SIDE
    and for the notional of MARKET orders; checks that need it are skipped when it is unknown
    (the exchange still checks them).
    """
    if not rules.trading:
        raise FailedPrecondition(f"{rules.symbol} is not trading (status {rules.status})", reason="SYMBOL_NOT_TRADING")
    if rules.allowed_types and request.type not in rules.allowed_types:
        raise InvalidArgument("type", f"{request.type.value} orders are not allowed on {rules.symbol}")
    if request.price is not None:
        _check_price("price", request.price, rules)
    if request.stop_price is not None:
        _check_price("stop_price", request.stop_price, rules)
    qty = request.quantity
    _check_lot(qty, rules.min_qty, rules.max_qty, rules.step_size, "LOT_SIZE")
    is_market = request.type in MARKET_LIKE
    if is_market:
        _check_lot(qty, rules.market_min_qty, rules.market_max_qty, rules.market_step_size, "MARKET_LOT_SIZE")
    _check_notional(request, rules, last_price, is_market)
    _check_percent_price(request, rules, last_price)


def _check_notional(request: OrderRequest, rules: SymbolRules, last_price: Decimal | None, is_market: bool) -> None:
    """NOTIONAL: the order's value within bounds (for market orders only where the symbol applies them)."""
    qty = request.quantity
    # The price the exchange values the order at: its limit price, the trigger of a stop-market
    # order, or the current price for a market order.
    if request.type is OrderType.MARKET:
        reference = last_price
    elif request.type in (OrderType.STOP, OrderType.TAKE_PROFIT):
        reference = request.stop_price
    else:
        reference = request.price
    if reference is not None and reference > 0:
        notional = CTX.multiply(reference, qty)
        if rules.min_notional and (not is_market or rules.apply_min_to_market) and notional < rules.min_notional:
            raise InvalidArgument(
                "quantity",
                f"notional {plain(notional)} (price x quantity) is below the minimum {plain(rules.min_notional)}"
                " (NOTIONAL)",
            )
        if rules.max_notional and (not is_market or rules.apply_max_to_market) and notional > rules.max_notional:
            raise InvalidArgument(
                "quantity",
                f"notional {plain(notional)} (price x quantity) is above the maximum {plain(rules.max_notional)}"
                " (NOTIONAL)",
            )


def _check_percent_price(request: OrderRequest, rules: SymbolRules, last_price: Decimal | None) -> None:
    """PERCENT_PRICE_BY_SIDE and PERCENT_PRICE: a limit price within its band around the current price."""
    if request.price is None or last_price is None or last_price <= 0:
        return
    if request.side is Side.BUY:
        up, down = rules.bid_multiplier_up, rules.bid_multiplier_down
    else:
        up, down = rules.ask_multiplier_up, rules.ask_multiplier_down
    for high, low, name in (
        (up, down, "PERCENT_PRICE_BY_SIDE"),
        (rules.multiplier_up, rules.multiplier_down, "PERCENT_PRICE"),
    ):
        if high and request.price > CTX.multiply(last_price, high):
            raise InvalidArgument(
                "price",
                f"{plain(request.price)} is above {plain(high)} x the current price {plain(last_price)} ({name})",
            )
        if low and request.price < CTX.multiply(last_price, low):
            raise InvalidArgument(
                "price",
                f"{plain(request.price)} is below {plain(low)} x the current price {plain(last_price)} ({name})",
            )
