"""SIGKILL the gateway while users cancel resting orders and place new ones: every cancel is carried out.

Real processes. While the gateway is dead, CancelOrder answers with the cancel pending
(``cancel_requested``) and PlaceOrder leaves new orders pending with an unknown outcome. After the
gateway is back, every requested cancel reaches the exchange within seconds, and no order placed
during the outage, whose cancel was requested, ever reaches the exchange.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from trading.order.v1 import order_pb2, order_service_pb2

from .conftest import ProcessStack
from .test_kill_and_restart import Clients, clients  # noqa: F401 - the fixture

pytestmark = pytest.mark.e2e

D = Decimal
pb = order_pb2


async def sim_orders(c: Clients, client_order_id: str) -> list[dict[str, Any]]:
    """The simulator's record of an order (empty if it never reached the exchange)."""
    url = f"{c.stack.sim_url}/sim/v1/orders?symbol=BTCUSDT&clientOrderId={client_order_id}"
    async with c.http.get(url) as response:
        assert response.status == 200
        result: list[dict[str, Any]] = await response.json()
        return result


async def place(c: Clients, auth: Any, price: str) -> pb.Order:
    response = await c.orders.PlaceOrder(
        order_service_pb2.PlaceOrderRequest(
            symbol="BTCUSDT", side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price=price
        ),
        metadata=auth,
        timeout=20,
    )
    return response.order


async def cancel(c: Clients, auth: Any, order_id: str) -> pb.Order:
    response = await c.orders.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=order_id), metadata=auth)
    return response.order


async def test_cancels_requested_while_the_gateway_is_dead_reach_the_exchange_after_its_return(
    processes: ProcessStack,
    clients: Clients,  # noqa: F811 - the fixture
) -> None:
    c = clients
    alice, alice_auth = await c.new_user("10000")
    bob, bob_auth = await c.new_user("10000")
    resting = [await place(c, auth, "45000.00") for auth in (alice_auth, bob_auth, alice_auth, bob_auth)]
    for order in resting:
        assert (await sim_orders(c, order.order_id))[0]["status"] == "NEW"

    processes.kill("exchange_gateway")  # SIGKILL
    to_cancel = resting[:3]
    for order, auth in zip(to_cancel, (alice_auth, bob_auth, alice_auth), strict=True):
        answer = await cancel(c, auth, order.order_id)
        assert answer.status == pb.ORDER_STATUS_PENDING and answer.cancel_requested, "the cancel is pending"
    during = [await place(c, auth, "44000.00") for auth in (alice_auth, bob_auth)]
    for order, auth in zip(during, (alice_auth, bob_auth), strict=True):
        assert order.status == pb.ORDER_STATUS_PENDING
        assert (await cancel(c, auth, order.order_id)).cancel_requested

    await asyncio.sleep(2.0)  # the gateway stays dead a while; nothing may be lost meanwhile
    processes.start("exchange_gateway")
    returned = time.monotonic()

    waits: list[float] = []
    for order in to_cancel:
        while True:
            found = await sim_orders(c, order.order_id)
            if found and found[0]["status"] == "CANCELED":
                waits.append(time.monotonic() - returned)
                break
            assert time.monotonic() - returned < 20, f"cancel of {order.order_id} never reached the exchange"
            await asyncio.sleep(0.1)
    for order, auth in zip(to_cancel, (alice_auth, bob_auth, alice_auth), strict=True):
        assert (await c.wait(auth, order.order_id, {pb.ORDER_STATUS_CANCELLED})).filled_quantity == "0.00000000"
    for order, auth in zip(during, (alice_auth, bob_auth), strict=True):
        ended = await c.wait(auth, order.order_id, {pb.ORDER_STATUS_CANCELLED})
        assert ended.exchange_order_id == "" and ended.filled_quantity == "0.00000000"
    for order in during:
        assert await sim_orders(c, order.order_id) == [], "an order whose cancel was requested reached the exchange"

    # The one order nobody cancelled still works and fills; the cancelled ones never do.
    await c.price("44990.00")
    kept = await c.wait(bob_auth, resting[3].order_id, {pb.ORDER_STATUS_FILLED})
    assert kept.filled_quantity == "0.01000000"
    alice_after = await c.settled(alice, lambda b: b["USDT"] == (D("10000"), D("0")))
    bob_after = await c.settled(bob, lambda b: b.get("BTC", (0, 0))[0] > 0 and b["USDT"][1] == 0)
    assert alice_after["USDT"] == (D("10000"), D("0"))
    assert bob_after["USDT"] == (D("10000") - D("450"), D("0"))
    assert len(waits) == len(to_cancel)
