"""Binance's market data streams on the simulator (raw and combined), and the REST market data endpoints beside them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import aiohttp

from services.exchange_simulator import RunningSimulator
from tests.integration.exchange_simulator.conftest import SignedClient, limit_order

D = Decimal


async def next_json(ws: aiohttp.ClientWebSocketResponse, timeout: float = 5.0) -> Any:
    message = await ws.receive(timeout=timeout)
    assert message.type == aiohttp.WSMsgType.TEXT, message
    return message.json()


async def next_data(ws: aiohttp.ClientWebSocketResponse, stream: str, timeout: float = 5.0) -> dict[str, Any]:
    """The next payload of ``stream`` on a combined connection (answers and other streams are skipped)."""
    while True:
        message = await next_json(ws, timeout)
        if isinstance(message, dict) and message.get("stream") == stream:
            return message["data"]


async def test_combined_stream_wraps_the_book_ticker_and_pushes_a_price_move(
    sim: RunningSimulator, session: aiohttp.ClientSession, client: SignedClient
) -> None:
    async with session.ws_connect(f"{sim.stream_url}/stream?streams=btcusdt@bookTicker") as ws:
        await client.control("price", {"symbol": "BTCUSDT", "price": "50100.00"})
        data = await next_data(ws, "btcusdt@bookTicker")
        assert set(data) == {"u", "s", "b", "B", "a", "A"}
        assert data["s"] == "BTCUSDT"
        assert (data["b"], data["B"], data["a"], data["A"]) == ("50100.00000000", "5.00000000") * 2
        first_update = data["u"]
        await client.control("price", {"symbol": "BTCUSDT", "price": "50200.00"})
        data = await next_data(ws, "btcusdt@bookTicker")
        assert data["b"] == "50200.00000000" and data["u"] > first_update


async def test_raw_stream_sends_partial_depth_unwrapped_every_100_ms(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    async with session.ws_connect(f"{sim.stream_url}/ws/ethusdt@depth5@100ms") as ws:
        first = await next_json(ws)
        second = await next_json(ws)
    assert set(first) == {"lastUpdateId", "bids", "asks"}
    assert len(first["bids"]) == 5 and len(first["asks"]) == 5
    assert first["asks"][0] == ["3000.00000000", "100.00000000"]
    assert first["asks"][1][0] == "3000.30000000" and first["bids"][1][0] == "2999.70000000"
    assert second["lastUpdateId"] >= first["lastUpdateId"]


async def test_the_depth_stream_and_the_depth_endpoint_agree(
    sim: RunningSimulator, session: aiohttp.ClientSession, client: SignedClient
) -> None:
    async with session.ws_connect(f"{sim.stream_url}/ws/bnbusdt@depth10@100ms") as ws:
        streamed = await next_json(ws)
    _, rest, headers = await client.call("GET", "/api/v3/depth", {"symbol": "BNBUSDT", "limit": 10}, signed=False)
    assert rest == streamed
    assert headers["X-MBX-USED-WEIGHT-1M"]


async def test_subscribe_list_and_unsubscribe_on_a_live_connection(
    sim: RunningSimulator, session: aiohttp.ClientSession, client: SignedClient
) -> None:
    async with session.ws_connect(f"{sim.stream_url}/stream") as ws:
        await ws.send_json({"method": "SUBSCRIBE", "params": ["btcusdt@ticker", "btcusdt@depth20@100ms"], "id": 1})
        assert await next_json(ws) == {"result": None, "id": 1}
        await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": "list2"})
        assert await next_data_or_answer(ws, "list2") == {
            "result": ["btcusdt@ticker", "btcusdt@depth20@100ms"],
            "id": "list2",
        }
        ticker = await next_data(ws, "btcusdt@ticker", timeout=3)
        assert ticker["e"] == "24hrTicker" and ticker["s"] == "BTCUSDT"
        assert ticker["c"] == "50000.00000000" and ticker["b"] == ticker["a"] == "50000.00000000"
        assert ticker["C"] - ticker["O"] == 24 * 3600 * 1000
        assert (await client.control("streams"))["subscriptions"] == {"btcusdt@depth20@100ms": 1, "btcusdt@ticker": 1}
        await ws.send_json({"method": "UNSUBSCRIBE", "params": ["btcusdt@depth20@100ms"], "id": 3})
        assert await next_data_or_answer(ws, 3) == {"result": None, "id": 3}
        assert (await client.control("streams"))["subscriptions"] == {"btcusdt@ticker": 1}


async def next_data_or_answer(ws: aiohttp.ClientWebSocketResponse, request_id: Any) -> dict[str, Any]:
    """The answer to ``request_id`` (stream payloads in between are skipped)."""
    while True:
        message = await next_json(ws)
        if "stream" not in message and message.get("id") == request_id:
            return message


async def test_bad_requests_get_binance_stream_errors(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(f"{sim.stream_url}/ws") as ws:
        await ws.send_str("{not json")
        error = await next_json(ws)
        assert error["error"]["code"] == 3 and error["error"]["msg"].startswith("Invalid JSON")
        await ws.send_json({"method": "SUBSCRIB", "params": [], "id": 4})
        error = await next_json(ws)
        assert error["id"] == 4 and error["error"]["code"] == 2
        assert "unknown variant `SUBSCRIB`" in error["error"]["msg"]
        await ws.send_json({"method": "SET_PROPERTY", "params": ["combined", "yes"], "id": 5})
        assert await next_json(ws) == {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": 5}
        await ws.send_json({"method": "GET_PROPERTY", "params": ["combined"], "id": 6})
        assert await next_json(ws) == {"result": False, "id": 6}


async def test_a_client_sending_more_than_five_messages_a_second_is_dropped(
    sim: RunningSimulator, session: aiohttp.ClientSession, client: SignedClient
) -> None:
    async with session.ws_connect(f"{sim.stream_url}/ws") as ws:
        for request_id in range(12):  # at least 6 of them fall in one clock second
            await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": request_id})
        answers = 0
        message = await ws.receive(timeout=5)
        while message.type == aiohttp.WSMsgType.TEXT:
            answers += 1
            message = await ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    assert answers < 12
    assert (await client.control("streams"))["connections"] == 0


async def test_drop_control_aborts_stream_connections_and_refuses_new_ones(
    sim: RunningSimulator, session: aiohttp.ClientSession, client: SignedClient
) -> None:
    async with session.ws_connect(f"{sim.stream_url}/ws/btcusdt@depth5@100ms") as ws:
        await next_json(ws)
        assert (await client.control("streams/drop", {"refuse_ms": 60_000}))["dropped"] == 1
        message = await ws.receive(timeout=5)
        while message.type == aiohttp.WSMsgType.TEXT:
            message = await ws.receive(timeout=5)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
    try:
        await session.ws_connect(f"{sim.stream_url}/ws/btcusdt@depth5@100ms")
        raise AssertionError("the connection was accepted during the refusal")
    except aiohttp.WSServerHandshakeError as error:
        assert error.status == 503
    assert (await client.control("streams"))["connections"] == 0


async def test_book_ticker_and_24hr_ticker_endpoints_with_their_weights(
    sim: RunningSimulator, client: SignedClient
) -> None:
    status, order, _ = await client.call("POST", "/api/v3/order", limit_order(price="51000.00", quantity="0.02000"))
    assert status == 200 and order["status"] == "FILLED"
    await client.control("price", {"symbol": "BTCUSDT", "price": "49000.00"})

    _, before, headers = await client.call("GET", "/api/v3/ticker/bookTicker", {"symbol": "BTCUSDT"}, signed=False)
    assert before == {
        "symbol": "BTCUSDT",
        "bidPrice": "49000.00000000",
        "bidQty": "5.00000000",
        "askPrice": "49000.00000000",
        "askQty": "5.00000000",
    }
    used = int(headers["X-MBX-USED-WEIGHT-1M"])
    _, ticker, headers = await client.call("GET", "/api/v3/ticker/24hr", {"symbol": "BTCUSDT"}, signed=False)
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) == used + 2
    assert ticker["lastPrice"] == "49000.00000000" and ticker["openPrice"] == "50000.00000000"
    assert ticker["highPrice"] == "50000.00000000" and ticker["lowPrice"] == "49000.00000000"
    assert ticker["priceChange"] == "-1000.00000000" and ticker["priceChangePercent"] == "-2.000"
    assert ticker["count"] == 1 and ticker["lastQty"] == "0.02000000" and ticker["volume"] == "0.02000000"
    assert D(ticker["quoteVolume"]) == D("1000.00")  # 0.02 at 50,000
    assert ticker["firstId"] == ticker["lastId"] == order["fills"][0]["tradeId"]
    _, every, headers = await client.call("GET", "/api/v3/ticker/24hr", {}, signed=False)
    assert {t["symbol"] for t in every} == {"BTCUSDT", "ETHUSDT", "BNBUSDT"}
    assert int(headers["X-MBX-USED-WEIGHT-1M"]) == used + 2 + 80
    _, mini, _ = await client.call("GET", "/api/v3/ticker/24hr", {"symbol": "ETHUSDT", "type": "MINI"}, signed=False)
    assert "bidPrice" not in mini and mini["lastPrice"] == "3000.00000000"
