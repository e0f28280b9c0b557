"""The REST API under ``/api/v3``: Binance's paths, parameters, weights, security checks, JSON shapes and errors.

Every request goes through one pipeline: parse the raw query and body (the query wins), charge the endpoint's
documented weight before anything else (429/418 when over), check the API key, signature and timestamp of SIGNED
endpoints, check the ORDERS limit for new orders, apply an armed fault, run the handler, and answer with the
X-MBX-USED-WEIGHT-1M header (plus X-MBX-ORDER-COUNT-10S/-1D on successful order placements).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from aiohttp import web

from services.exchange_simulator import errors, market_data, wire
from services.exchange_simulator.errors import BinanceError
from services.exchange_simulator.faults import Fault
from services.exchange_simulator.matching import (
    BNB,
    LIMIT,
    MARKET,
    ORDER_TYPES,
    PRICED_TYPES,
    SIDES,
    STOP_TYPES,
    TIME_IN_FORCES,
    NewOrder,
    Order,
)
from services.exchange_simulator.symbols import fmt8

if TYPE_CHECKING:
    from services.exchange_simulator.simulator import Simulator

Params = dict[str, str]
Handler = Callable[["Simulator", Params, int], Any]

_NUMBER = re.compile(r"^[0-9]{1,20}(\.[0-9]{1,20})?$")
_NUMBER_RANGE = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
_CLIENT_ID = re.compile(r"^[a-zA-Z0-9\-_]{1,36}$")
_CLIENT_ID_RANGE = "^[a-zA-Z0-9-_]{1,36}$"
_Q8 = Decimal("0.00000001")
_JSON_HEADERS = {"Content-Type": "application/json;charset=UTF-8"}


@dataclass(frozen=True)
class Endpoint:
    """One REST endpoint: its weight rule, security type, handler and which fault name it answers to."""

    method: str
    path: str
    weight: Callable[[Params], int]
    handler: Handler
    signed: bool = False
    fault: str = "api"
    new_order: bool = False


# ------------------------------------------------------------------------------------------ parameter parsing


def _parse_pairs(raw: str) -> Params:
    pairs = parse_qsl(raw, keep_blank_values=True)
    params = dict(pairs)
    if len(params) != len(pairs):
        raise errors.duplicate_parameter()
    return params


def parse_params(raw_query: str, raw_body: str) -> Params:
    """Query and form body parameters; a parameter sent in both takes the query's value (Binance's rule)."""
    params = _parse_pairs(raw_body) if raw_body else {}
    if raw_query:
        params.update(_parse_pairs(raw_query))
    return params


def _get(p: Params, name: str) -> str | None:
    value = p.get(name)
    return value if value else None


def _required(p: Params, name: str) -> str:
    value = p.get(name)
    if not value:
        raise errors.mandatory(name)
    return value


def _decimal(p: Params, name: str) -> Decimal | None:
    raw = _get(p, name)
    if raw is None:
        return None
    if not _NUMBER.match(raw):
        raise errors.illegal_chars(name, _NUMBER_RANGE)
    value = Decimal(raw)
    if value != value.quantize(_Q8):
        raise errors.too_much_precision(name)
    return value


def _int(p: Params, name: str, default: int | None = None) -> int | None:
    raw = _get(p, name)
    if raw is None:
        return default
    if not raw.isdigit() or len(raw) > 20:
        raise errors.illegal_chars(name, "^[0-9]{1,20}$")
    return int(raw)


def _limit(p: Params, default: int, maximum: int) -> int:
    value = _int(p, "limit", default)
    assert value is not None
    if value < 1:
        raise errors.illegal_chars("limit", "^[0-9]{1,20}$")
    return min(value, maximum)


def _symbol(sim: Simulator, p: Params) -> str:
    symbol = _required(p, "symbol")
    if symbol not in sim.exchange.markets:
        raise errors.invalid_symbol()
    return symbol


def _symbols_list(sim: Simulator, raw: str) -> list[str]:
    try:
        names = json.loads(raw)
    except ValueError:
        raise BinanceError(-1100, "Illegal characters found in parameter 'symbols'; legal range is '^\\[.*\\]$'.")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise errors.mandatory("symbols")
    if len(set(names)) != len(names):
        raise BinanceError(-1151, "Symbol is present multiple times in the list.")
    for name in names:
        if name not in sim.exchange.markets:
            raise errors.invalid_symbol()
    return names


def parse_new_order(sim: Simulator, p: Params) -> tuple[NewOrder, str | None]:
    """Check a new order's parameters the way Binance does; return the order and its newOrderRespType."""
    symbol = _symbol(sim, p)
    side = _required(p, "side")
    if side not in SIDES:
        raise BinanceError(-1117, "Invalid side.")
    order_type = _required(p, "type")
    if order_type not in ORDER_TYPES:
        raise BinanceError(-1116, "Invalid orderType.")
    time_in_force = _get(p, "timeInForce")
    if time_in_force is not None and time_in_force not in TIME_IN_FORCES:
        raise BinanceError(-1115, "Invalid timeInForce.")
    resp_type = _get(p, "newOrderRespType")
    if resp_type is not None and resp_type not in ("ACK", "RESULT", "FULL"):
        raise errors.illegal_chars("newOrderRespType", "ACK, RESULT, FULL")
    client_order_id = _get(p, "newClientOrderId")
    if client_order_id is not None and not _CLIENT_ID.match(client_order_id):
        raise errors.illegal_chars("newClientOrderId", _CLIENT_ID_RANGE)
    quantity = _decimal(p, "quantity")
    quote_order_qty = _decimal(p, "quoteOrderQty")
    price = _decimal(p, "price")
    stop_price = _decimal(p, "stopPrice")

    _needed("timeInForce", time_in_force, order_type in (LIMIT, "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"))
    _check_quantities(order_type, quantity, quote_order_qty)
    _needed("price", price, order_type in PRICED_TYPES)
    _needed("stopPrice", stop_price, order_type in STOP_TYPES)
    _refuse_unsupported(p)
    return (
        NewOrder(
            symbol=symbol,
            side=side,
            type=order_type,
            quantity=quantity,
            quote_order_qty=quote_order_qty,
            price=price,
            stop_price=stop_price,
            time_in_force=time_in_force,
            client_order_id=client_order_id,
        ),
        resp_type,
    )


def _needed(name: str, value: object, needed: bool) -> None:
    """``name`` is mandatory where the order type uses it and refused where it does not."""
    if needed and value is None:
        raise errors.mandatory(name)
    if not needed and value is not None:
        raise errors.not_required(name)


def _check_quantities(order_type: str, quantity: Decimal | None, quote_order_qty: Decimal | None) -> None:
    """A MARKET order takes quantity or quoteOrderQty (exactly one); any other type quantity only."""
    if order_type == MARKET:
        if quantity is None and quote_order_qty is None:
            raise errors.one_of_mandatory("quantity", "quoteOrderQty")
        if quantity is not None and quote_order_qty is not None:
            raise errors.not_required("quoteOrderQty")
    else:
        if quantity is None:
            raise errors.mandatory("quantity")
        if quote_order_qty is not None:
            raise errors.not_required("quoteOrderQty")


def _refuse_unsupported(p: Params) -> None:
    """Iceberg, trailing and pegged orders exist on Binance but not on the simulated symbols."""
    if _get(p, "icebergQty") is not None:
        raise errors.order_rejected("Iceberg orders are not supported for this symbol.")
    if _get(p, "trailingDelta") is not None:
        raise errors.order_rejected("Trailing stop orders are not supported for this symbol.")
    if _get(p, "pegPriceType") is not None:
        raise errors.order_rejected(errors.UNSUPPORTED_COMBINATION)


def _order_ref(p: Params) -> tuple[int | None, str | None]:
    order_id = _int(p, "orderId")
    client_order_id = _get(p, "origClientOrderId")
    if order_id is None and client_order_id is None:
        raise errors.one_of_mandatory("origClientOrderId", "orderId")
    return order_id, client_order_id


# ------------------------------------------------------------------------------------------ handlers: market data


def ping(sim: Simulator, p: Params, now: int) -> Any:
    return {}


def server_time(sim: Simulator, p: Params, now: int) -> Any:
    return {"serverTime": now}


def exchange_info(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _get(p, "symbol")
    symbols_raw = _get(p, "symbols")
    if symbol is not None and symbols_raw is not None:
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    if symbol is not None:
        names = [_symbol(sim, p)]
    elif symbols_raw is not None:
        names = _symbols_list(sim, symbols_raw)
    else:
        names = list(sim.exchange.markets)
    return {
        "timezone": "UTC",
        "serverTime": now,
        "rateLimits": sim.limiter.exchange_info_limits(),
        "exchangeFilters": [],
        "symbols": [sim.exchange.markets[name].spec.exchange_info() for name in names],
    }


def ticker_price(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _get(p, "symbol")
    symbols_raw = _get(p, "symbols")
    if symbol is not None:
        return {"symbol": _symbol(sim, p), "price": fmt8(sim.exchange.last_price(symbol))}
    names = _symbols_list(sim, symbols_raw) if symbols_raw is not None else list(sim.exchange.markets)
    return [{"symbol": name, "price": fmt8(sim.exchange.last_price(name))} for name in names]


def avg_price(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _symbol(sim, p)
    market = sim.exchange.markets[symbol]
    return {"mins": market.spec.avg_price_mins, "price": fmt8(market.last_price), "closeTime": now}


def depth(sim: Simulator, p: Params, now: int) -> Any:
    """The synthetic book a taker meets: asks from the last price upward, bids from it downward."""
    symbol = _symbol(sim, p)
    limit = _limit(p, 100, 5000)
    return market_data.depth_payload(sim.exchange.markets[symbol], limit)


def book_ticker(sim: Simulator, p: Params, now: int) -> Any:
    """Best bid and ask with their quantities, for one symbol, a list of them, or every symbol."""
    if _get(p, "symbol") is not None:
        return market_data.book_ticker_rest(sim.exchange.markets[_symbol(sim, p)])
    symbols_raw = _get(p, "symbols")
    names = _symbols_list(sim, symbols_raw) if symbols_raw is not None else list(sim.exchange.markets)
    return [market_data.book_ticker_rest(sim.exchange.markets[name]) for name in names]


def ticker_24hr(sim: Simulator, p: Params, now: int) -> Any:
    """24-hour rolling statistics (``type`` FULL or MINI), for one symbol, a list of them, or every symbol."""
    kind = _get(p, "type") or "FULL"
    if kind not in ("FULL", "MINI"):
        raise errors.illegal_chars("type", "FULL, MINI")
    symbol = _get(p, "symbol")
    symbols_raw = _get(p, "symbols")
    if symbol is not None and symbols_raw is not None:
        raise BinanceError(-1128, "Combination of optional parameters invalid.")
    mini = kind == "MINI"
    if symbol is not None:
        return market_data.ticker_rest(market_data.day_stats(sim.exchange.markets[_symbol(sim, p)], now), mini=mini)
    names = _symbols_list(sim, symbols_raw) if symbols_raw is not None else list(sim.exchange.markets)
    return [market_data.ticker_rest(market_data.day_stats(sim.exchange.markets[n], now), mini=mini) for n in names]


# ------------------------------------------------------------------------------------------ handlers: trading


def new_order(sim: Simulator, p: Params, now: int) -> Any:
    request, resp_type = parse_new_order(sim, p)
    try:
        order, events = sim.exchange.place(request, now)
    except BinanceError:
        sim.orders_rejected += 1
        raise
    sim.publish(events)
    if resp_type is None:
        resp_type = "FULL" if request.type in (MARKET, LIMIT) else "ACK"
    if resp_type == "ACK":
        return wire.order_ack(order, now)
    if resp_type == "RESULT":
        return wire.order_result(order, now)
    return wire.order_full(order, now)


def test_order(sim: Simulator, p: Params, now: int) -> Any:
    request, _ = parse_new_order(sim, p)
    sim.exchange.check_filters(request)
    if p.get("computeCommissionRates") == "true":
        rate = fmt8(sim.exchange.commission_rate)
        zero = "0.00000000"
        in_bnb = sim.exchange.commission_asset == BNB
        return {
            "standardCommissionForOrder": {"maker": rate, "taker": rate},
            "specialCommissionForOrder": {"maker": zero, "taker": zero},
            "taxCommissionForOrder": {"maker": zero, "taker": zero},
            # Paying with BNB is shown as enabled; the configured rate is charged as it is (no further discount).
            "discount": {
                "enabledForAccount": in_bnb,
                "enabledForSymbol": in_bnb,
                "discountAsset": "BNB",
                "discount": zero,
            },
        }
    return {}


def cancel_order(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _symbol(sim, p)
    order_id, client_order_id = _order_ref(p)
    new_client_order_id = _get(p, "newClientOrderId")
    if new_client_order_id is not None and not _CLIENT_ID.match(new_client_order_id):
        raise errors.illegal_chars("newClientOrderId", _CLIENT_ID_RANGE)
    restrictions = _get(p, "cancelRestrictions")
    if restrictions is not None and restrictions not in ("ONLY_NEW", "ONLY_PARTIALLY_FILLED"):
        raise BinanceError(-1145, "cancelRestrictions has to be either ONLY_NEW or ONLY_PARTIALLY_FILLED.")
    order, cancel_id, events = sim.exchange.cancel(
        symbol,
        order_id=order_id,
        orig_client_order_id=client_order_id,
        new_client_order_id=new_client_order_id,
        cancel_restrictions=restrictions,
        now=now,
    )
    sim.publish(events)
    return wire.order_cancel(order, cancel_id, now)


def cancel_open_orders(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _symbol(sim, p)
    cancelled, events = sim.exchange.cancel_all(symbol, now=now)
    sim.publish(events)
    return [wire.order_cancel(order, cancel_id, now) for order, cancel_id in cancelled]


def query_order(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _symbol(sim, p)
    order_id, client_order_id = _order_ref(p)
    order = sim.exchange.find_order(symbol, order_id, client_order_id)
    if order is None:
        raise errors.no_such_order()
    return wire.order_query(order)


def open_orders(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _symbol(sim, p) if _get(p, "symbol") is not None else None
    return [wire.order_query(order) for order in sim.exchange.open_orders(symbol)]


def _in_time(item_time: int, start: int | None, end: int | None) -> bool:
    return (start is None or item_time >= start) and (end is None or item_time <= end)


def all_orders(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _symbol(sim, p)
    order_id = _int(p, "orderId")
    start, end = _int(p, "startTime"), _int(p, "endTime")
    limit = _limit(p, 500, 1000)
    orders: list[Order] = list(sim.exchange.markets[symbol].orders.values())
    if order_id is not None:
        selected = [o for o in orders if o.order_id >= order_id][:limit]
    elif start is not None or end is not None:
        selected = [o for o in orders if _in_time(o.time, start, end)]
        selected = selected[:limit] if start is not None else selected[-limit:]
    else:
        selected = orders[-limit:]
    return [wire.order_query(order) for order in selected]


def my_trades(sim: Simulator, p: Params, now: int) -> Any:
    symbol = _symbol(sim, p)
    order_id = _int(p, "orderId")
    from_id = _int(p, "fromId")
    start, end = _int(p, "startTime"), _int(p, "endTime")
    limit = _limit(p, 500, 1000)
    market = sim.exchange.markets[symbol]
    if order_id is not None:
        order = market.orders.get(order_id)
        trades = list(order.trades) if order is not None else []
    else:
        trades = list(market.trades)
    if from_id is not None:
        trades = [t for t in trades if t.id >= from_id][:limit]
    elif start is not None or end is not None:
        trades = [t for t in trades if _in_time(t.time, start, end)]
        trades = trades[:limit] if start is not None else trades[-limit:]
    else:
        trades = trades[-limit:]
    return [wire.my_trade(trade) for trade in trades]


def account(sim: Simulator, p: Params, now: int) -> Any:
    omit_zero = p.get("omitZeroBalances") == "true"
    acct = sim.exchange.account
    balances = [
        {"asset": asset, "free": fmt8(b.free), "locked": fmt8(b.locked)}
        for asset, b in acct.balances.items()
        if not (omit_zero and b.free == 0 and b.locked == 0)
    ]
    rate, zero = fmt8(sim.exchange.commission_rate), "0.00000000"
    bips = int((sim.exchange.commission_rate * 10000).to_integral_value(rounding=ROUND_HALF_UP))
    return {
        "makerCommission": bips,
        "takerCommission": bips,
        "buyerCommission": 0,
        "sellerCommission": 0,
        "commissionRates": {"maker": rate, "taker": rate, "buyer": zero, "seller": zero},
        "canTrade": True,
        "canWithdraw": True,
        "canDeposit": True,
        "brokered": False,
        "requireSelfTradePrevention": False,
        "preventSor": False,
        "updateTime": acct.update_time,
        "accountType": "SPOT",
        "balances": balances,
        "permissions": ["SPOT"],
        "uid": 100000001,
    }


def rate_limit_order(sim: Simulator, p: Params, now: int) -> Any:
    return sim.limiter.order_limits(now)


# ------------------------------------------------------------------------------------------ weights


def _fixed(weight: int) -> Callable[[Params], int]:
    return lambda p: weight


def _ticker_weight(p: Params) -> int:
    return 2 if p.get("symbol") else 4


def _ticker_24hr_weight(p: Params) -> int:
    if p.get("symbol"):
        return 2
    raw = p.get("symbols")
    if not raw:
        return 80
    try:
        count = len(json.loads(raw))
    except (ValueError, TypeError):
        count = 1
    return 2 if count <= 20 else 40 if count <= 100 else 80


def _depth_weight(p: Params) -> int:
    raw = p.get("limit") or "100"
    limit = int(raw) if raw.isdigit() else 100
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/v3/ping", _fixed(1), ping),
    Endpoint("GET", "/api/v3/time", _fixed(1), server_time),
    Endpoint("GET", "/api/v3/exchangeInfo", _fixed(20), exchange_info),
    Endpoint("GET", "/api/v3/ticker/price", _ticker_weight, ticker_price),
    Endpoint("GET", "/api/v3/avgPrice", _fixed(2), avg_price),
    Endpoint("GET", "/api/v3/depth", _depth_weight, depth),
    Endpoint("GET", "/api/v3/ticker/bookTicker", _ticker_weight, book_ticker),
    Endpoint("GET", "/api/v3/ticker/24hr", _ticker_24hr_weight, ticker_24hr),
    Endpoint("POST", "/api/v3/order", _fixed(1), new_order, signed=True, fault="order.new", new_order=True),
    Endpoint("DELETE", "/api/v3/order", _fixed(1), cancel_order, signed=True, fault="order.cancel"),
    Endpoint("GET", "/api/v3/order", _fixed(4), query_order, signed=True, fault="order.query"),
    Endpoint(
        "POST",
        "/api/v3/order/test",
        lambda p: 20 if p.get("computeCommissionRates") == "true" else 1,
        test_order,
        signed=True,
    ),
    Endpoint("GET", "/api/v3/openOrders", lambda p: 6 if p.get("symbol") else 80, open_orders, signed=True),
    Endpoint("DELETE", "/api/v3/openOrders", _fixed(1), cancel_open_orders, signed=True, fault="order.cancel"),
    Endpoint("GET", "/api/v3/allOrders", _fixed(20), all_orders, signed=True),
    Endpoint("GET", "/api/v3/account", _fixed(20), account, signed=True),
    Endpoint("GET", "/api/v3/myTrades", lambda p: 5 if p.get("orderId") else 20, my_trades, signed=True),
    Endpoint("GET", "/api/v3/rateLimit/order", _fixed(40), rate_limit_order, signed=True),
)


# ------------------------------------------------------------------------------------------ the pipeline


def _json(status: int, body: Any, headers: dict[str, str]) -> web.Response:
    headers.update(_JSON_HEADERS)
    return web.Response(
        body=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8"),
        status=status,
        headers=headers,
    )


def _fault_error(fault: Fault) -> BinanceError | None:
    if fault.action == "http_503":
        return errors.internal_error()
    if fault.action == "error_1007":
        return errors.backend_timeout()
    return None


async def _delay_and_fault(fault: Fault) -> BinanceError | None:
    """Wait ``fault``'s delay; the error it injects, if any."""
    if fault.delay_ms:
        await asyncio.sleep(fault.delay_ms / 1000)
    return _fault_error(fault)


def _admit(
    sim: Simulator, endpoint: Endpoint, params: Params, now: int, *, api_key: str | None, raw_query: str, raw_body: str
) -> None:
    """The request weight, then a signed endpoint's signature, then a new order's order count, as Binance checks."""
    rejection = sim.limiter.admit(endpoint.weight(params), now)
    if rejection is not None:
        raise BinanceError(rejection.code, rejection.msg, rejection.status, rejection.retry_after)
    if endpoint.signed:
        sim.authenticate(api_key, raw_query, raw_body, params, now)
    if endpoint.new_order:
        rejection = sim.limiter.admit_order(now)
        if rejection is not None:
            raise BinanceError(rejection.code, rejection.msg, rejection.status, rejection.retry_after)


def _usage_headers(sim: Simulator, endpoint: Endpoint, status: int, retry_after: int | None) -> dict[str, str]:
    """The used weight, a placed order's order counts and Retry-After, as Binance sends them."""
    done = sim.clock()
    headers = {"X-MBX-USED-WEIGHT-1M": str(sim.limiter.used_weight(done))}
    if endpoint.new_order and status == 200:
        headers["X-MBX-ORDER-COUNT-10S"] = str(sim.limiter.order_count_10s(done))
        headers["X-MBX-ORDER-COUNT-1D"] = str(sim.limiter.order_count_day(done))
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return headers


def make_handler(sim: Simulator, endpoint: Endpoint) -> Callable[[web.Request], Any]:
    """The aiohttp handler that runs ``endpoint`` through the pipeline."""

    async def handle(request: web.Request) -> web.Response:
        now = sim.clock()
        sim.requests += 1
        raw_query = request.raw_path.partition("?")[2]
        raw_body = ""
        if request.method != "GET" and request.body_exists:
            raw_body = (await request.read()).decode("utf-8", "replace")
        status = 200
        retry_after: int | None = None
        fault: Fault | None = None
        try:
            params = parse_params(raw_query, raw_body)
            _admit(
                sim,
                endpoint,
                params,
                now,
                api_key=request.headers.get("X-MBX-APIKEY"),
                raw_query=raw_query,
                raw_body=raw_body,
            )
            fault = sim.faults.take(endpoint.fault)
            if fault is not None and fault.when == "before":
                failure = await _delay_and_fault(fault)
                if failure is not None:
                    raise failure
            body = endpoint.handler(sim, params, now)
        except BinanceError as error:
            status, body, retry_after = error.status, error.body(), error.retry_after
        if fault is not None and fault.when == "after":
            failure = await _delay_and_fault(fault)
            if failure is not None:
                status, body = failure.status, failure.body()
        return _json(status, body, _usage_headers(sim, endpoint, status, retry_after))

    return handle


def add_routes(app: web.Application, sim: Simulator) -> None:
    """Register every REST endpoint."""
    for endpoint in ENDPOINTS:
        app.router.add_route(endpoint.method, endpoint.path, make_handler(sim, endpoint))
