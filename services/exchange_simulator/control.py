"""Control endpoints under ``/sim/v1`` (not Binance's): prices, liquidity, random walk, limits, commission, faults,
reset, stats.

JSON in, JSON out, no signature. Numbers may be sent as strings ("49000.00") or JSON numbers; both are read
exactly as decimals. A malformed request answers 400 ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from aiohttp import web

from services.exchange_simulator import wire
from services.exchange_simulator.faults import ACTIONS, ENDPOINTS, WHENS, Fault
from services.exchange_simulator.matching import COMMISSION_ASSETS, is_multiple
from services.exchange_simulator.symbols import fmt8

if TYPE_CHECKING:
    from services.exchange_simulator.simulator import Simulator


class ControlError(Exception):
    """A control request that cannot be carried out (HTTP 400)."""


async def _body(request: web.Request) -> dict[str, Any]:
    text = await request.text()
    if not text.strip():
        return {}
    try:
        body = json.loads(text, parse_float=Decimal)
    except ValueError as error:
        raise ControlError(f"body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise ControlError("body must be a JSON object")
    return body


def _decimal(body: dict[str, Any], name: str, *, required: bool = True, positive: bool = True) -> Decimal | None:
    raw = body.get(name)
    if raw is None:
        if required:
            raise ControlError(f"{name} is required")
        return None
    if isinstance(raw, bool):
        raise ControlError(f"{name} must be a decimal number")
    try:
        value = Decimal(str(raw))
    except InvalidOperation:
        raise ControlError(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0 or (positive and value == 0):
        raise ControlError(f"{name} must be {'positive' if positive else 'non-negative'}")
    return value


MAX_ID = 2**63 - 1
"""Binance's ids are signed 64-bit integers."""


def _int(body: dict[str, Any], name: str, minimum: int = 0, maximum: int | None = None) -> int | None:
    raw = body.get(name)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | Decimal | str):
        raise ControlError(f"{name} must be an integer")
    try:
        number = Decimal(str(raw))
    except InvalidOperation:
        raise ControlError(f"{name} must be an integer") from None
    if not number.is_finite() or number != number.to_integral_value():
        raise ControlError(f"{name} must be an integer")
    value = int(number)
    if value < minimum:
        raise ControlError(f"{name} must be at least {minimum}")
    if maximum is not None and value > maximum:
        raise ControlError(f"{name} must be at most {maximum}")
    return value


def _symbol(sim: Simulator, body: dict[str, Any]) -> str:
    symbol = body.get("symbol")
    if not isinstance(symbol, str) or symbol not in sim.exchange.markets:
        raise ControlError(f"unknown symbol {symbol!r}")
    return symbol


def _amounts(raw: Any, name: str, *, positive: bool) -> dict[str, Decimal]:
    if not isinstance(raw, dict):
        raise ControlError(f"{name} must be an object of decimal amounts")
    result: dict[str, Decimal] = {}
    for key in raw:
        value = _decimal(raw, key, positive=positive)
        assert value is not None
        result[str(key)] = value
    return result


# ------------------------------------------------------------------------------------------ handlers


def set_price(sim: Simulator, body: dict[str, Any]) -> Any:
    symbol = _symbol(sim, body)
    price = _decimal(body, "price")
    volume = _decimal(body, "volume", required=False, positive=False)
    assert price is not None
    tick = sim.exchange.markets[symbol].spec.tick_size
    if not is_multiple(price, tick):
        raise ControlError(f"price must be a multiple of the tick size {tick}")
    events = sim.exchange.set_price(symbol, price, volume)
    sim.publish(events)
    trades = sum(1 for event in events if getattr(event, "execution_type", None) == "TRADE")
    return {"symbol": symbol, "price": fmt8(price), "trades": trades}


def set_liquidity(sim: Simulator, body: dict[str, Any]) -> Any:
    symbol = _symbol(sim, body)
    level_quantity = _decimal(body, "level_quantity", required=False, positive=False)
    levels = _int(body, "levels")
    sim.exchange.set_liquidity(symbol, level_quantity, levels)
    market = sim.exchange.markets[symbol]
    return {
        "symbol": symbol,
        "level_quantity": fmt8(market.level_quantity),
        "levels": market.levels,
        "spread": fmt8(market.spread()),
    }


def set_random_walk(sim: Simulator, body: dict[str, Any]) -> Any:
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise ControlError("enabled must be true or false")
    interval_ms = _int(body, "interval_ms", minimum=1)
    step_bps = _decimal(body, "step_bps", required=False)
    sim.set_random_walk(enabled, interval_ms, step_bps)
    return {"enabled": sim.walk_enabled, "interval_ms": sim.walk_interval_ms, "step_bps": str(sim.walk_step_bps)}


RATE_LIMIT_FIELDS = ("orders_per_10s", "orders_per_day", "weight_per_minute", "raw_requests_per_5m", "ban_base_seconds")
FILTER_LIMIT_FIELDS = ("max_num_orders", "max_num_algo_orders")


def set_limits(sim: Simulator, body: dict[str, Any]) -> Any:
    unknown = set(body) - set(RATE_LIMIT_FIELDS) - set(FILTER_LIMIT_FIELDS)
    if unknown:
        raise ControlError(f"unknown limits: {', '.join(sorted(unknown))}")
    values = {name: _int(body, name, minimum=1) for name in (*RATE_LIMIT_FIELDS, *FILTER_LIMIT_FIELDS)}
    limits = sim.limiter.limits
    for name in RATE_LIMIT_FIELDS:
        if values[name] is not None:
            setattr(limits, name, values[name])
    sim.exchange.set_order_limits(values["max_num_orders"], values["max_num_algo_orders"])
    spec = next(iter(sim.exchange.markets.values())).spec
    return {
        "weight_per_minute": limits.weight_per_minute,
        "orders_per_10s": limits.orders_per_10s,
        "orders_per_day": limits.orders_per_day,
        "raw_requests_per_5m": limits.raw_requests_per_5m,
        "ban_base_seconds": limits.ban_base_seconds,
        "max_num_orders": spec.max_num_orders,
        "max_num_algo_orders": spec.max_num_algo_orders,
    }


COMMISSION_FIELDS = ("asset", "rate")


def set_commission(sim: Simulator, body: dict[str, Any]) -> Any:
    unknown = set(body) - set(COMMISSION_FIELDS)
    if unknown:
        raise ControlError(f"unknown commission settings: {', '.join(sorted(unknown))}")
    asset = body.get("asset")
    if asset not in COMMISSION_ASSETS:
        raise ControlError('asset must be "BNB" (pay fees with BNB) or "" (the asset received)')
    rate = _decimal(body, "rate", required=False, positive=False)
    if rate is not None and rate >= 1:
        raise ControlError("rate must be below 1")
    sim.exchange.set_commission(asset, rate)
    return sim.commission_settings()


def set_faults(sim: Simulator, body: dict[str, Any]) -> Any:
    action = body.get("action")
    if action not in ACTIONS:
        raise ControlError(f"action must be one of {', '.join(ACTIONS)}")
    if action == "clear":
        sim.faults.clear()
        return {"pending": []}
    if action == "drop_ws":
        refuse_ms = _int(body, "drop_events_ms") or 0
        dropped = sim.hub.drop_all(refuse_ms)
        return {"dropped": dropped, "refuse_ms": refuse_ms, "pending": sim.faults.describe()}
    endpoint = body.get("endpoint", "order.new")
    if endpoint not in ENDPOINTS:
        raise ControlError(f"endpoint must be one of {', '.join(ENDPOINTS)}")
    when = body.get("when", "after")
    if when not in WHENS:
        raise ControlError("when must be before or after")
    count = _int(body, "count", minimum=1) or 1
    delay_ms = _int(body, "delay_ms") or 0
    if action == "delay" and delay_ms == 0:
        raise ControlError("delay needs delay_ms")
    sim.faults.add(Fault(action=action, endpoint=endpoint, when=when, remaining=count, delay_ms=delay_ms))
    return {"pending": sim.faults.describe()}


def reset(sim: Simulator, body: dict[str, Any]) -> Any:
    balances = _amounts(body["balances"], "balances", positive=False) if body.get("balances") is not None else None
    prices = _amounts(body["prices"], "prices", positive=True) if body.get("prices") is not None else None
    for symbol, price in (prices or {}).items():
        tick = sim.exchange.markets[_symbol(sim, {"symbol": symbol})].spec.tick_size
        if not is_multiple(price, tick):
            raise ControlError(f"price of {symbol} must be a multiple of the tick size {tick}")
    next_order_id = _int(body, "next_order_id", minimum=1, maximum=MAX_ID)
    next_trade_id = _int(body, "next_trade_id", minimum=1, maximum=MAX_ID)
    sim.reset(balances, prices, next_order_id=next_order_id, next_trade_id=next_trade_id)
    return {"reset": True}


def stats(sim: Simulator, query: dict[str, str]) -> Any:
    return sim.stats()


def orders(sim: Simulator, query: dict[str, str]) -> Any:
    symbol = query.get("symbol")
    client_order_id = query.get("clientOrderId")
    result = []
    for order in sim.exchange.all_orders():
        if symbol is not None and order.symbol != symbol:
            continue
        if client_order_id is not None and order.client_order_id != client_order_id:
            continue
        result.append(wire.order_query(order))
    return result


def balances(sim: Simulator, query: dict[str, str]) -> Any:
    return {
        asset: {"free": fmt8(b.free), "locked": fmt8(b.locked)} for asset, b in sim.exchange.account.balances.items()
    }


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":"), default=str), status=status, content_type="application/json"
    )


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register the control endpoints."""
    posts: dict[str, Any] = {
        "/sim/v1/price": set_price,
        "/sim/v1/liquidity": set_liquidity,
        "/sim/v1/random-walk": set_random_walk,
        "/sim/v1/limits": set_limits,
        "/sim/v1/commission": set_commission,
        "/sim/v1/faults": set_faults,
        "/sim/v1/reset": reset,
    }
    gets: dict[str, Any] = {"/sim/v1/stats": stats, "/sim/v1/orders": orders, "/sim/v1/balances": balances}

    def post_handler(func: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            try:
                return _json(func(sim, await _body(request)))
            except ControlError as error:
                return _json({"error": str(error)}, status=400)

        return handle

    def get_handler(func: Any) -> Any:
        async def handle(request: web.Request) -> web.Response:
            return _json(func(sim, dict(request.query)))

        return handle

    for path, func in posts.items():
        app.router.add_post(path, post_handler(func))
    for path, func in gets.items():
        app.router.add_get(path, get_handler(func))
