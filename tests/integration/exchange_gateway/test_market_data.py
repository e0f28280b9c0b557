"""Market data through the gateway: the simulator's streams, and REST snapshots shared while they are not live."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from tests.integration.exchange_gateway.conftest import SERVICE, Gateway, Sim, StartGateway, eventually
from tests.support import next_ticker
from trading.gateway.v1 import market_data_pb2

mpb = market_data_pb2
STREAM = mpb.MARKET_DATA_SOURCE_STREAM
REST = mpb.MARKET_DATA_SOURCE_REST


async def ticker(gateway: Gateway, symbol: str = "BTCUSDT") -> mpb.Ticker:
    response = await gateway.stub.GetTicker(mpb.GetTickerRequest(symbol=symbol), metadata=SERVICE, timeout=5)
    return response.ticker


async def book(gateway: Gateway, symbol: str = "BTCUSDT", depth: int = 0) -> mpb.OrderBook:
    request = mpb.GetOrderBookRequest(symbol=symbol, depth=depth)
    response = await gateway.stub.GetOrderBook(request, metadata=SERVICE, timeout=5)
    return response.book


async def stream_ticker(gateway: Gateway, symbol: str = "BTCUSDT") -> mpb.Ticker:
    """GetTicker once the symbol's streams are live."""
    result: list[mpb.Ticker] = []

    async def live() -> bool:
        result[:] = [await ticker(gateway, symbol)]
        return result[0].source == STREAM

    await eventually(live, what=f"{symbol} from the stream")
    return result[0]


def rest_paths(sent: list[tuple[str, str, dict[str, str]]], path: str) -> list[dict[str, str]]:
    return [params for _, p, params in sent if p == path]


async def test_the_first_request_subscribes_and_the_stream_then_serves_ticker_and_book(
    sim: Sim, gateway: Gateway
) -> None:
    first = await ticker(gateway)
    assert first.symbol == "BTCUSDT" and first.last_price == "50000.00000000"
    assert (first.bid_price, first.bid_quantity, first.ask_price, first.ask_quantity) == (
        "50000.00000000",
        "5.00000000",
        "50000.00000000",
        "5.00000000",
    )
    assert first.update_time.seconds > 0
    live = await stream_ticker(gateway)
    assert live.last_price == "50000.00000000" and live.bid_price == "50000.00000000"
    streams = await sim.get("streams")
    assert streams["subscriptions"] == {"btcusdt@bookTicker": 1, "btcusdt@depth20@100ms": 1, "btcusdt@ticker": 1}

    await sim.post("liquidity", {"symbol": "BTCUSDT", "levels": 60})
    sent = gateway.record_requests()
    top = await book(gateway, depth=5)
    assert top.source == STREAM and len(top.bids) == 5 and len(top.asks) == 5
    assert top.asks[1].price == "50005.00000000" and top.bids[1].price == "49995.00000000"
    assert top.bids[0].quantity == "5.00000000" and top.update_id > 0
    default = await book(gateway)
    assert len(default.bids) == 10 and default.source == STREAM
    deep = await book(gateway, depth=50)
    assert deep.source == REST and len(deep.asks) == 50 and deep.asks[49].price == "50245.00000000"
    assert rest_paths(sent, "/api/v3/depth") == [{"symbol": "BTCUSDT", "limit": "100"}]
    assert rest_paths(sent, "/api/v3/ticker/24hr") == []


async def test_a_hundred_concurrent_callers_cost_one_rest_request_and_none_once_the_stream_is_live(
    sim: Sim, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(ws_reconnect_max_s=0.5)
    await sim.post("streams/drop", {"refuse_ms": 60_000})
    sent = gateway.record_requests()
    tickers = await asyncio.gather(*(ticker(gateway, "ETHUSDT") for _ in range(100)))
    assert {t.last_price for t in tickers} == {"3000.00000000"}
    assert {t.source for t in tickers} == {REST}
    assert rest_paths(sent, "/api/v3/ticker/24hr") == [{"symbol": "ETHUSDT"}]
    books = await asyncio.gather(*(book(gateway, "ETHUSDT", depth=d) for d in range(1, 101)))
    assert [len(b.bids) for b in books] == list(range(1, 21)) + [20] * 80  # the book is 20 levels deep
    assert len(rest_paths(sent, "/api/v3/depth")) == 1

    await sim.post("streams/drop", {"refuse_ms": 0})
    await stream_ticker(gateway, "ETHUSDT")
    before = len(sent)
    tickers = await asyncio.gather(*(ticker(gateway, "ETHUSDT") for _ in range(100)))
    assert {t.source for t in tickers} == {STREAM}
    assert sent[before:] == []


async def watch(gateway: Gateway, symbols: list[str]) -> Any:
    return gateway.stub.WatchTickers(mpb.WatchTickersRequest(symbols=symbols), metadata=SERVICE)


async def test_a_price_moved_on_the_simulator_reaches_watch_tickers(sim: Sim, gateway: Gateway) -> None:
    call = await watch(gateway, ["BTCUSDT", "BNBUSDT"])
    try:
        firsts = {(await call.read()).ticker.symbol for _ in range(2)}
        assert firsts == {"BTCUSDT", "BNBUSDT"}
        await stream_ticker(gateway)
        await sim.price("BTCUSDT", "50100.00")
        moved = await next_ticker(call, lambda t: t.symbol == "BTCUSDT" and t.bid_price == "50100.00000000")
        assert moved.ask_price == "50100.00000000" and moved.source == STREAM
        last = await next_ticker(call, lambda t: t.symbol == "BTCUSDT" and t.last_price == "50100.00000000")
        assert last.bid_price == "50100.00000000"
    finally:
        call.cancel()
    streams = await sim.get("streams")
    assert streams["subscriptions"]["bnbusdt@bookTicker"] == 1


async def test_watchers_are_fed_by_rest_while_the_stream_is_down_and_by_the_stream_again_after(
    sim: Sim, start_gateway: StartGateway
) -> None:
    gateway = await start_gateway(market_data_ttl_ms=200, ws_reconnect_max_s=0.5)
    call = await watch(gateway, ["BTCUSDT"])
    try:
        await call.read()
        await stream_ticker(gateway)
        await sim.post("streams/drop", {"refuse_ms": 60_000})
        await sim.price("BTCUSDT", "49900.00")
        polled = await next_ticker(call, lambda t: t.last_price == "49900.00000000")
        assert polled.source == REST and polled.bid_price == "49900.00000000"
        await sim.post("streams/drop", {"refuse_ms": 0})
        await stream_ticker(gateway)
        await sim.price("BTCUSDT", "49800.00")
        streamed = await next_ticker(call, lambda t: t.bid_price == "49800.00000000")
        assert streamed.source == STREAM
    finally:
        call.cancel()


async def test_a_symbol_nobody_asks_about_is_unsubscribed(sim: Sim, start_gateway: StartGateway) -> None:
    gateway = await start_gateway(market_data_ttl_ms=100, market_data_idle_s=0.5)
    await stream_ticker(gateway, "BNBUSDT")

    async def unsubscribed() -> bool:
        return (await sim.get("streams"))["subscriptions"] == {}

    await eventually(unsubscribed, what="the idle symbol's streams unsubscribed")
    assert gateway.running.internals.quotes.followed == []


@pytest.mark.parametrize(
    ("call", "code", "field"),
    [
        ("ticker-empty", grpc.StatusCode.INVALID_ARGUMENT, "symbol"),
        ("ticker-unknown", grpc.StatusCode.NOT_FOUND, ""),
        ("book-deep", grpc.StatusCode.INVALID_ARGUMENT, "depth"),
        ("book-negative", grpc.StatusCode.INVALID_ARGUMENT, "depth"),
        ("watch-none", grpc.StatusCode.INVALID_ARGUMENT, "symbols"),
        ("watch-unknown", grpc.StatusCode.NOT_FOUND, ""),
    ],
)
async def test_bad_market_data_requests_are_refused(gateway: Gateway, call: str, code: grpc.StatusCode, field: str):
    stub = gateway.stub
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if call == "ticker-empty":
            await stub.GetTicker(mpb.GetTickerRequest(symbol=""), metadata=SERVICE)
        elif call == "ticker-unknown":
            await stub.GetTicker(mpb.GetTickerRequest(symbol="NOPEUSDT"), metadata=SERVICE)
        elif call == "book-deep":
            await stub.GetOrderBook(mpb.GetOrderBookRequest(symbol="BTCUSDT", depth=101), metadata=SERVICE)
        elif call == "book-negative":
            await stub.GetOrderBook(mpb.GetOrderBookRequest(symbol="BTCUSDT", depth=-1), metadata=SERVICE)
        else:
            symbols = [] if call == "watch-none" else ["BTCUSDT", "NOPEUSDT"]
            async for _ in stub.WatchTickers(mpb.WatchTickersRequest(symbols=symbols), metadata=SERVICE):
                pass
    assert caught.value.code() == code
    if field:
        assert caught.value.details().startswith(f"{field}:")
    assert gateway.running.internals.quotes.followed == []
