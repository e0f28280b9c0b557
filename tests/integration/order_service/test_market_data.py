"""Market data for users over the real stack: ListSymbols, GetTicker, GetOrderBook, WatchTickers with a user's key."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import grpc
import pytest

from services.exchange_simulator.rest import ENDPOINTS
from services.order_service.api.codec import TYPE_IN
from tests.support import next_ticker
from trading.gateway.v1 import gateway_service_pb2_grpc
from trading.gateway.v1 import market_data_pb2 as gateway_market_data_pb2
from trading.order.v1 import market_data_pb2

from .conftest import ADMIN, SERVICE_TOKEN, Stack, Trader

mpb = market_data_pb2
WEIGHTS = {(e.method, e.path): e.weight for e in ENDPOINTS}


async def traders(stack: Stack, count: int) -> list[Trader]:
    """``count`` users with API keys (created ten at a time)."""
    created: list[Trader] = []
    while len(created) < count:
        batch = min(10, count - len(created))
        created += await asyncio.gather(*(stack.trader({}, name="viewer") for _ in range(batch)))
    return created


async def get_ticker(trader: Trader, symbol: str) -> mpb.Ticker:
    response = await trader.stub.GetTicker(mpb.GetTickerRequest(symbol=symbol), metadata=trader.auth, timeout=10)
    return response.ticker


def record_gateway_requests(stack: Stack) -> list[tuple[str, str, dict[str, str]]]:
    """From now on, every REST request the gateway sends to the exchange: (method, path, parameters)."""
    sent: list[tuple[str, str, dict[str, str]]] = []
    transport = stack.gateway_running.internals.rest.transport
    send = transport.request

    async def request(method: str, url: str, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        sent.append((method, parts.path, dict(parse_qsl(parts.query))))
        return await send(method, url, **kwargs)

    transport.request = request
    return sent


async def weight_used(stack: Stack) -> int:
    """All the request weight the simulator has charged, over every minute window it remembers."""
    async with stack.http.get(f"{stack.sim.base_url}/sim/v1/stats") as response:
        stats = await response.json()
    return sum(stats["weight_per_minute_window"].values())


def weight_of(sent: list[tuple[str, str, dict[str, str]]]) -> int:
    """The weight the simulator charges for these requests (its own table of Binance's weights)."""
    return sum(WEIGHTS[(method, path)](params) for method, path, params in sent)


async def served_from_the_stream(stack: Stack, symbol: str, timeout: float = 20.0) -> None:
    """Wait until the gateway answers the symbol's ticker from its streams (asking it costs nothing then)."""
    async with grpc.aio.insecure_channel(stack.gateway_running.addr) as channel:
        stub = gateway_service_pb2_grpc.ExchangeGatewayStub(channel)
        request = gateway_market_data_pb2.GetTickerRequest(symbol=symbol)
        deadline = time.monotonic() + timeout
        while True:
            response = await stub.GetTicker(request, metadata=(("authorization", f"Bearer {SERVICE_TOKEN}"),))
            if response.ticker.source == gateway_market_data_pb2.MARKET_DATA_SOURCE_STREAM:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{symbol} not served from the stream in time")
            await asyncio.sleep(0.1)


async def until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_a_users_key_lists_symbols_and_reads_a_ticker_and_a_book(stack: Stack) -> None:
    alice = await stack.trader({})
    listed = await alice.stub.ListSymbols(mpb.ListSymbolsRequest(), metadata=alice.auth, timeout=10)
    assert [s.symbol for s in listed.symbols] == ["BNBUSDT", "BTCUSDT", "ETHUSDT"]
    assert listed.next_page_token == ""
    btc = listed.symbols[1]
    assert (btc.base_asset, btc.quote_asset, btc.status) == ("BTC", "USDT", mpb.SYMBOL_STATUS_TRADING)
    assert (btc.tick_size, btc.step_size) == ("0.01000000", "0.00001000")
    assert (btc.min_quantity, btc.max_quantity, btc.min_notional) == ("0.00001000", "9000.00000000", "5.00000000")
    assert set(btc.order_types) == set(TYPE_IN)  # the simulator lists every type PlaceOrder knows

    first = await alice.stub.ListSymbols(mpb.ListSymbolsRequest(page_size=2), metadata=alice.auth)
    assert [s.symbol for s in first.symbols] == ["BNBUSDT", "BTCUSDT"] and first.next_page_token
    rest = await alice.stub.ListSymbols(
        mpb.ListSymbolsRequest(page_size=2, page_token=first.next_page_token), metadata=alice.auth
    )
    assert [s.symbol for s in rest.symbols] == ["ETHUSDT"] and rest.next_page_token == ""

    ticker = await get_ticker(alice, "BTCUSDT")
    assert (ticker.symbol, ticker.last_price) == ("BTCUSDT", "50000.00000000")
    assert (ticker.bid_price, ticker.bid_quantity) == ("50000.00000000", "5.00000000")
    assert (ticker.ask_price, ticker.ask_quantity) == ("50000.00000000", "5.00000000")
    assert abs(ticker.update_time.seconds - time.time()) < 60

    book = (await alice.stub.GetOrderBook(mpb.GetOrderBookRequest(symbol="ETHUSDT", depth=3), metadata=alice.auth)).book
    assert [(b.price, b.quantity) for b in book.bids] == [
        ("3000.00000000", "100.00000000"),
        ("2999.70000000", "100.00000000"),
        ("2999.40000000", "100.00000000"),
    ]
    assert [a.price for a in book.asks] == ["3000.00000000", "3000.30000000", "3000.60000000"]
    default = (await alice.stub.GetOrderBook(mpb.GetOrderBookRequest(symbol="ETHUSDT"), metadata=alice.auth)).book
    assert len(default.bids) == len(default.asks) == 10


async def test_a_price_moved_on_the_simulator_reaches_watch_tickers(stack: Stack) -> None:
    alice, bob = await stack.trader({}), await stack.trader({})
    alice_call = alice.stub.WatchTickers(mpb.WatchTickersRequest(symbols=["BTCUSDT", "ETHUSDT"]), metadata=alice.auth)
    bob_call = bob.stub.WatchTickers(mpb.WatchTickersRequest(symbols=["BTCUSDT"]), metadata=bob.auth)
    try:
        current = {(await alice_call.read()).ticker.symbol for _ in range(2)}
        assert current == {"BTCUSDT", "ETHUSDT"}
        assert (await bob_call.read()).ticker.last_price == "50000.00000000"
        gateway_quotes = stack.gateway_running.internals.quotes
        await until(lambda: stack.gateway_running.internals.market_stream.is_live("BTCUSDT"), "BTCUSDT's streams live")
        assert stack.orders_running.app.quotes.feeds == ["BTCUSDT", "ETHUSDT"]  # one gateway stream per symbol

        await stack.price("50100.00")
        for call in (alice_call, bob_call):
            moved = await next_ticker(call, lambda t: t.last_price == "50100.00000000")
            assert moved.symbol == "BTCUSDT" and moved.bid_price == moved.ask_price == "50100.00000000"
        assert sorted(gateway_quotes.followed) == ["BTCUSDT", "ETHUSDT"]
    finally:
        alice_call.cancel()
        bob_call.cancel()
    await until(lambda: stack.orders_running.app.quotes.feeds == [], "the order service's gateway streams closed")


async def test_a_hundred_users_asking_for_the_same_ticker_cost_the_weight_budget_once(stack: Stack) -> None:
    viewers = await traders(stack, 100)
    sim = stack.sim

    # Streams refused: the first burst costs one REST snapshot (ticker/24hr, weight 2), not a hundred.
    async with stack.http.post(f"{sim.base_url}/sim/v1/streams/drop", json={"refuse_ms": 60_000}) as response:
        assert response.status == 200
    sent = record_gateway_requests(stack)
    before = await weight_used(stack)
    tickers = await asyncio.gather(*(get_ticker(v, "ETHUSDT") for v in viewers))
    after = await weight_used(stack)
    assert {t.last_price for t in tickers} == {"3000.00000000"}
    market = [(path, params) for _, path, params in sent if path.startswith(("/api/v3/ticker", "/api/v3/depth"))]
    assert market == [("/api/v3/ticker/24hr", {"symbol": "ETHUSDT"})]
    assert after - before == weight_of(sent)  # nothing else was charged: the hundred users cost weight 2

    # Streams live: a hundred users cost the exchange's request budget nothing at all.
    async with stack.http.post(f"{sim.base_url}/sim/v1/streams/drop", json={"refuse_ms": 0}) as response:
        assert response.status == 200
    await served_from_the_stream(stack, "ETHUSDT")
    sent.clear()
    before = await weight_used(stack)
    tickers = await asyncio.gather(*(get_ticker(v, "ETHUSDT") for v in viewers))
    after = await weight_used(stack)
    assert len(tickers) == 100
    assert [p for _, p, _ in sent if p.startswith(("/api/v3/ticker", "/api/v3/depth"))] == []
    assert after - before == weight_of(sent)


@pytest.mark.parametrize(
    ("rpc", "request_fields", "code", "field"),
    [
        ("GetTicker", {"symbol": ""}, grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
        ("GetTicker", {"symbol": "btcusdt"}, grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
        ("GetTicker", {"symbol": "NOPEUSDT"}, grpc.StatusCode.NOT_FOUND, ""),
        ("GetOrderBook", {"symbol": "BTCUSDT", "depth": 101}, grpc.StatusCode.INVALID_ARGUMENT, "depth"),
        ("GetOrderBook", {"symbol": "BTCUSDT", "depth": -1}, grpc.StatusCode.INVALID_ARGUMENT, "depth"),
        ("GetOrderBook", {"symbol": "", "depth": 5}, grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
        ("GetOrderBook", {"symbol": "NOPEUSDT"}, grpc.StatusCode.NOT_FOUND, ""),
        ("ListSymbols", {"page_size": -1}, grpc.StatusCode.INVALID_ARGUMENT, "page_size"),
        ("ListSymbols", {"page_token": "not-a-token"}, grpc.StatusCode.INVALID_ARGUMENT, "page_token"),
        ("WatchTickers", {"symbols": []}, grpc.StatusCode.INVALID_ARGUMENT, "symbols"),
        ("WatchTickers", {"symbols": [f"SYM{i}USDT" for i in range(21)]}, grpc.StatusCode.INVALID_ARGUMENT, "symbols"),
        ("WatchTickers", {"symbols": ["BTCUSDT", "eth"]}, grpc.StatusCode.INVALID_ARGUMENT, "symbols"),
        ("WatchTickers", {"symbols": ["BTCUSDT", "NOPEUSDT"]}, grpc.StatusCode.NOT_FOUND, ""),
    ],
)
async def test_bad_market_data_requests_are_refused(
    stack: Stack, rpc: str, request_fields: dict[str, Any], code: grpc.StatusCode, field: str
) -> None:
    alice = await stack.trader({})
    request = getattr(mpb, f"{rpc}Request")(**request_fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if rpc == "WatchTickers":
            async for _ in alice.stub.WatchTickers(request, metadata=alice.auth, timeout=10):
                pass
        else:
            await getattr(alice.stub, rpc)(request, metadata=alice.auth, timeout=10)
    assert caught.value.code() == code, caught.value.details()
    if field:
        assert caught.value.details().startswith(f"{field}:")
    assert stack.orders_running.app.quotes.feeds == []


async def test_market_data_needs_a_users_key(stack: Stack) -> None:
    stub = stack.order_stub
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub.GetTicker(mpb.GetTickerRequest(symbol="BTCUSDT"))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as admin:
        await stub.ListSymbols(mpb.ListSymbolsRequest(), metadata=ADMIN)
    assert admin.value.code() == grpc.StatusCode.PERMISSION_DENIED
