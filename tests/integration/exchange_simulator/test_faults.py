"""Injected faults: a 5xx after acting leaves the order placed; -1007 before acting leaves nothing; slow answers."""

from __future__ import annotations

import asyncio

from services.exchange_simulator import RunningSimulator
from services.exchange_simulator.errors import TIMEOUT_HTTP_STATUS
from tests.integration.exchange_simulator.conftest import SignedClient, limit_order


async def test_503_after_acting_leaves_the_order_on_the_exchange(client: SignedClient, sim: RunningSimulator) -> None:
    await client.control("faults", {"action": "http_503", "endpoint": "order.new", "when": "after"})
    status, body, _ = await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="unknown-outcome"))
    assert (status, body) == (
        503,
        {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."},
    )
    status, order, _ = await client.call(
        "GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "unknown-outcome"}
    )
    assert (status, order["status"]) == (200, "NEW")
    orders = await client.control("orders?clientOrderId=unknown-outcome")
    assert len(orders) == 1
    # The fault was for one request only.
    assert (await client.call("POST", "/api/v3/order", limit_order()))[0] == 200


async def test_1007_before_acting_places_nothing(client: SignedClient) -> None:
    await client.control("faults", {"action": "error_1007", "when": "before", "count": 2})
    for _ in range(2):
        status, body, _ = await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="never-placed"))
        assert status == TIMEOUT_HTTP_STATUS
        assert body == {
            "code": -1007,
            "msg": "Timeout waiting for response from backend server. Send status unknown; execution status unknown.",
        }
    status, body, _ = await client.call(
        "GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "never-placed"}
    )
    assert (status, body["code"]) == (400, -2013)


async def test_faults_on_cancel_and_query_endpoints(client: SignedClient) -> None:
    _, placed, _ = await client.call("POST", "/api/v3/order", limit_order())
    await client.control("faults", {"action": "http_503", "endpoint": "order.cancel"})
    await client.control("faults", {"action": "http_503", "endpoint": "order.query", "when": "before"})
    status, _, _ = await client.call("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]})
    assert status == 503
    status, _, _ = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]})
    assert status == 503
    _, order, _ = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]})
    assert order["status"] == "CANCELED"
    assert (await client.control("stats"))["faults"] == []


async def test_delay_after_acting_holds_the_answer_while_the_order_already_exists(client: SignedClient) -> None:
    await client.control("faults", {"action": "delay", "delay_ms": 1500})
    answer = asyncio.ensure_future(client.call("POST", "/api/v3/order", limit_order(newClientOrderId="slow")))
    for _ in range(200):
        if await client.control("orders?clientOrderId=slow"):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the order never reached the exchange")
    assert not answer.done()
    status, body, _ = await answer
    assert (status, body["clientOrderId"]) == (200, "slow")


async def test_clear_disarms_pending_faults(client: SignedClient) -> None:
    await client.control("faults", {"action": "http_503", "endpoint": "any", "count": 5})
    await client.control("faults", {"action": "clear"})
    assert (await client.call("GET", "/api/v3/ping", signed=False))[0] == 200
