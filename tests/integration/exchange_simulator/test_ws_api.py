"""The WebSocket API user data stream: subscription by signature, executionReport and outboundAccountPosition."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from services.exchange_simulator import RunningSimulator, SimConfig, start_simulator
from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
from tests.integration.exchange_simulator.conftest import SignedClient, away_from_window_edge, limit_order

EXECUTION_REPORT_FIELDS = frozenset("eEscSofqpPFgCxXrilzLnNTtIwmMOZYQWV")


def subscribe_params(key: str = SIM_DEV_API_KEY, secret: str = SIM_DEV_API_SECRET) -> dict[str, Any]:
    params: dict[str, Any] = {"apiKey": key, "timestamp": int(time.time() * 1000)}
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["signature"] = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return params


class Stream:
    """A subscribed WebSocket API connection that hands out events in order."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws

    async def request(self, request_id: Any, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.ws.send_json({"id": request_id, "method": method, "params": params or {}})
        return await self.next_message()

    async def next_message(self) -> dict[str, Any]:
        message = await self.ws.receive(timeout=5)
        assert message.type == aiohttp.WSMsgType.TEXT, message
        return message.json()

    async def execution(self) -> dict[str, Any]:
        """The next executionReport (account positions in between are skipped)."""
        while True:
            message = await self.next_message()
            if message["event"]["e"] == "executionReport":
                return message["event"]

    async def position(self) -> dict[str, Any]:
        while True:
            message = await self.next_message()
            if message["event"]["e"] == "outboundAccountPosition":
                return message["event"]


@pytest.fixture
async def stream(sim: RunningSimulator, session: aiohttp.ClientSession) -> AsyncIterator[Stream]:
    ws = await session.ws_connect(sim.ws_api_url)
    s = Stream(ws)
    answer = await s.request("sub-1", "userDataStream.subscribe.signature", subscribe_params())
    assert answer["status"] == 200, answer
    assert answer["result"] == {"subscriptionId": 0}
    assert answer["rateLimits"][0]["rateLimitType"] == "REQUEST_WEIGHT"
    yield s
    await ws.close()


async def test_new_then_partial_then_full_trade_with_exact_cumulative_figures(
    stream: Stream, client: SignedClient
) -> None:
    status, placed, _ = await client.call(
        "POST", "/api/v3/order", limit_order(side="SELL", quantity="0.50000", price="51000.00", newClientOrderId="ws-1")
    )
    assert status == 200, placed
    new = await stream.execution()
    assert set(new) >= EXECUTION_REPORT_FIELDS
    assert (new["x"], new["X"], new["c"], new["i"], new["S"], new["o"], new["f"]) == (
        "NEW",
        "NEW",
        "ws-1",
        placed["orderId"],
        "SELL",
        "LIMIT",
        "GTC",
    )
    assert (new["q"], new["p"], new["z"], new["Z"], new["t"], new["N"], new["w"]) == (
        "0.50000000",
        "51000.00000000",
        "0.00000000",
        "0.00000000",
        -1,
        None,
        True,
    )
    position = await stream.position()
    assert {"a": "BTC", "f": "999.50000000", "l": "0.50000000"} in position["B"]

    await client.control("price", {"symbol": "BTCUSDT", "price": "51000.00", "volume": "0.2"})
    partial = await stream.execution()
    assert (partial["x"], partial["X"], partial["l"], partial["z"], partial["L"], partial["Y"], partial["Z"]) == (
        "TRADE",
        "PARTIALLY_FILLED",
        "0.20000000",
        "0.20000000",
        "51000.00000000",
        "10200.00000000",
        "10200.00000000",
    )
    assert (partial["n"], partial["N"], partial["m"]) == ("10.20000000", "USDT", True)
    position = await stream.position()
    assert {"a": "BTC", "f": "999.50000000", "l": "0.30000000"} in position["B"]

    await client.control("price", {"symbol": "BTCUSDT", "price": "51200.00"})
    full = await stream.execution()
    assert (full["x"], full["X"], full["l"], full["z"], full["L"], full["Y"], full["Z"], full["t"]) == (
        "TRADE",
        "FILLED",
        "0.30000000",
        "0.50000000",
        "51000.00000000",
        "15300.00000000",
        "25500.00000000",
        partial["t"] + 1,
    )
    assert full["I"] > partial["I"] > new["I"]


async def test_canceled_and_expired_reports(stream: Stream, client: SignedClient) -> None:
    _, placed, _ = await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="to-cancel"))
    assert (await stream.execution())["x"] == "NEW"
    await client.call(
        "DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"], "newClientOrderId": "cxl-1"}
    )
    report = await stream.execution()
    assert (report["x"], report["X"], report["c"], report["C"], report["i"]) == (
        "CANCELED",
        "CANCELED",
        "cxl-1",
        "to-cancel",
        placed["orderId"],
    )
    position = await stream.position()
    assert {"a": "USDT", "f": "10000000.00000000", "l": "0.00000000"} in position["B"]

    await client.call("POST", "/api/v3/order", limit_order(timeInForce="IOC", newClientOrderId="ioc-1"))
    assert (await stream.execution())["x"] == "NEW"
    expired = await stream.execution()
    assert (expired["x"], expired["X"], expired["c"], expired["z"], expired["eR"]) == (
        "EXPIRED",
        "EXPIRED",
        "ioc-1",
        "0.00000000",
        "UNFILLED_IOC_QUANTITY_EXPIRED",
    )


async def test_stops_trigger_in_both_directions(stream: Stream, client: SignedClient) -> None:
    stop = {"symbol": "BTCUSDT", "type": "STOP_LOSS", "quantity": "0.01"}
    await client.call(
        "POST", "/api/v3/order", {**stop, "side": "SELL", "stopPrice": "49000", "newClientOrderId": "down"}
    )
    await client.call("POST", "/api/v3/order", {**stop, "side": "BUY", "stopPrice": "51000", "newClientOrderId": "up"})
    assert [(await stream.execution())["c"] for _ in range(2)] == ["down", "up"]

    await client.control("price", {"symbol": "BTCUSDT", "price": "48990.00"})
    down = await stream.execution()
    assert (down["c"], down["x"], down["X"], down["L"], down["m"]) == (
        "down",
        "TRADE",
        "FILLED",
        "48990.00000000",
        False,
    )
    await client.control("price", {"symbol": "BTCUSDT", "price": "51000.00"})
    up = await stream.execution()
    assert (up["c"], up["x"], up["X"], up["L"]) == ("up", "TRADE", "FILLED", "51000.00000000")


async def test_market_order_in_several_trades_reports_each(stream: Stream, client: SignedClient) -> None:
    await client.control("liquidity", {"symbol": "ETHUSDT", "level_quantity": "1", "levels": 3})
    status, placed, _ = await client.call(
        "POST", "/api/v3/order", {"symbol": "ETHUSDT", "side": "BUY", "type": "MARKET", "quantity": "3.5"}
    )
    assert status == 200 and placed["status"] == "EXPIRED" and placed["executedQty"] == "3.00000000"
    reports = [await stream.execution() for _ in range(5)]
    assert [r["x"] for r in reports] == ["NEW", "TRADE", "TRADE", "TRADE", "EXPIRED"]
    assert [r["L"] for r in reports[1:4]] == ["3000.00000000", "3000.30000000", "3000.60000000"]
    assert [r["z"] for r in reports[1:4]] == ["1.00000000", "2.00000000", "3.00000000"]
    assert reports[-1]["eR"] == "INSUFFICIENT_LIQUIDITY"


async def test_subscription_errors_and_other_methods(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    async with session.ws_connect(sim.ws_api_url) as ws:
        s = Stream(ws)
        assert (await s.request(1, "ping"))["result"] == {}
        assert isinstance((await s.request(2, "time"))["result"]["serverTime"], int)
        bad = await s.request(3, "userDataStream.subscribe.signature", subscribe_params(secret="wrong"))
        assert (bad["status"], bad["error"]) == (
            400,
            {"code": -1022, "msg": "Signature for this request is not valid."},
        )
        stale = subscribe_params()
        stale["timestamp"] -= 60_000
        params = {k: v for k, v in stale.items() if k != "signature"}
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
        stale["signature"] = hmac.new(SIM_DEV_API_SECRET.encode(), payload.encode(), hashlib.sha256).hexdigest()
        answer = await s.request(4, "userDataStream.subscribe.signature", stale)
        assert answer["error"]["code"] == -1021
        unknown_key = await s.request(5, "userDataStream.subscribe.signature", subscribe_params(key="other"))
        assert (unknown_key["status"], unknown_key["error"]["code"]) == (401, -2015)
        ok = await s.request(6, "userDataStream.subscribe.signature", subscribe_params())
        assert ok["result"] == {"subscriptionId": 0}
        again = await s.request(7, "userDataStream.subscribe.signature", subscribe_params())
        assert again["error"] == {"code": -2035, "msg": "User Data Stream subscription already active."}
        assert (await s.request(8, "session.subscriptions"))["result"] == [{"subscriptionId": 0}]
        assert (await s.request(9, "userDataStream.unsubscribe"))["result"] == {}
        terminated = await s.next_message()
        assert terminated["subscriptionId"] == 0 and terminated["event"]["e"] == "eventStreamTerminated"
        assert (await s.request(10, "no.such.method"))["status"] == 400


async def test_drop_ws_closes_connections_and_missed_events_are_not_replayed(
    stream: Stream, client: SignedClient, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    result = await client.control("faults", {"action": "drop_ws", "drop_events_ms": 60_000})
    assert result["dropped"] == 1
    message = await stream.ws.receive(timeout=5)
    assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
    # While the connection is down, events happen and are not kept for it.
    await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="while-down"))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await session.ws_connect(sim.ws_api_url)
    assert refused.value.status == 503
    assert (await client.control("stats"))["ws_connections"] == 0

    sim.simulator.hub.refuse_until = 0  # end the outage now rather than waiting for it
    async with session.ws_connect(sim.ws_api_url) as ws:
        s = Stream(ws)
        assert (await s.request(1, "userDataStream.subscribe.signature", subscribe_params()))["status"] == 200
        await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="after-reconnect"))
        assert (await s.execution())["c"] == "after-reconnect"


async def test_server_sends_ping_frames(session: aiohttp.ClientSession) -> None:
    running = await start_simulator(SimConfig(port=0, ws_ping_interval_s=0.05))
    try:
        async with session.ws_connect(running.ws_api_url, autoping=False) as ws:
            message = await ws.receive(timeout=5)
            assert message.type == aiohttp.WSMsgType.PING
            await ws.pong(message.data)
            await ws.send_json({"id": "after-pong", "method": "ping", "params": {}})
            while (message := await ws.receive(timeout=5)).type == aiohttp.WSMsgType.PING:
                await ws.pong(message.data)
            assert message.json()["id"] == "after-pong"
    finally:
        await running.stop()


async def test_client_that_never_answers_pings_is_dropped(session: aiohttp.ClientSession) -> None:
    running = await start_simulator(SimConfig(port=0, ws_ping_interval_s=0.05, ws_pong_timeout_s=0.2))
    try:
        async with session.ws_connect(running.ws_api_url, autoping=False) as ws:
            while True:
                message = await ws.receive(timeout=5)
                if message.type != aiohttp.WSMsgType.PING:
                    break
            assert message.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR, aiohttp.WSMsgType.CLOSE)
    finally:
        await running.stop()


async def test_connection_limit(session: aiohttp.ClientSession) -> None:
    await away_from_window_edge(300_000)
    running = await start_simulator(SimConfig(port=0, ws_connections_per_5m=2))
    try:
        first = await session.ws_connect(running.ws_api_url)
        second = await session.ws_connect(running.ws_api_url)
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(running.ws_api_url)
        assert refused.value.status == 429
        await asyncio.gather(first.close(), second.close())
    finally:
        await running.stop()
