"""WatchOrders: every change of the caller's orders as it happens, nothing of anyone else's."""

from __future__ import annotations

import itertools
from decimal import Decimal

from tests.order_watch import Watch
from trading.order.v1 import order_pb2

from .conftest import Stack, Trader

pb = order_pb2


D = Decimal


def watching(trader: Trader, symbol: str = "") -> Watch:
    return Watch(trader.stub, trader.auth, symbol)


async def test_watchers_get_every_transition_of_their_orders_and_nothing_else(stack: Stack) -> None:
    alice = await stack.trader({"USDT": "10000"})
    bob = await stack.trader({"USDT": "10000"})
    alice_watch = await watching(alice).start()
    bob_watch = await watching(bob).start()
    bob_eth = await watching(bob, "ETHUSDT").start()
    try:
        order = await alice.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.02", price="49000.00")
        await stack.price("49000.00", volume="0.005")
        await alice.wait(order.order_id, lambda o: o.status == pb.ORDER_STATUS_PARTIALLY_FILLED)
        await alice.cancel(order.order_id)
        await alice_watch.until(lambda seen: any(o.status == pb.ORDER_STATUS_CANCELLED for o in seen))

        statuses = [o.status for o in alice_watch.seen]
        assert {o.order_id for o in alice_watch.seen} == {order.order_id}
        assert {o.user_id for o in alice_watch.seen} == {alice.user_id}
        # Every transition, in order: PENDING -> PARTIALLY_FILLED -> CANCELLED (with the cancel request seen).
        transitions = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
        assert transitions == [pb.ORDER_STATUS_PENDING, pb.ORDER_STATUS_PARTIALLY_FILLED, pb.ORDER_STATUS_CANCELLED]
        assert any(o.cancel_requested for o in alice_watch.seen)
        assert alice_watch.seen[-1].filled_quantity == "0.00500000"
        last = alice_watch.seen[-1]
        assert last.exchange_order_number > 0 and last.exchange_order_id == str(last.exchange_order_number)
        views = [
            (o.status, o.filled_quantity, o.commission, o.cancel_requested, o.exchange_order_id, o.reject_reason)
            for o in alice_watch.seen
        ]
        assert all(a != b for a, b in itertools.pairwise(views)), "never the same update twice"

        # Bob saw nothing of Alice's: the first thing his stream delivers is his own order.
        mine = await bob.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="48000.00")
        await bob_watch.until(lambda seen: len(seen) >= 1)
        assert {o.order_id for o in bob_watch.seen} == {mine.order_id}
        assert bob_eth.seen == []  # filtered by symbol
    finally:
        for watch in (alice_watch, bob_watch, bob_eth):
            await watch.close()


async def test_a_market_order_is_seen_from_pending_to_filled(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    watch = await watching(trader).start()
    try:
        order = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_MARKET, quantity="0.01")
        await watch.until(lambda seen: any(o.status == pb.ORDER_STATUS_FILLED for o in seen))
        assert watch.seen[0].status in (pb.ORDER_STATUS_PENDING, pb.ORDER_STATUS_FILLED)
        assert watch.seen[-1].status == pb.ORDER_STATUS_FILLED
        assert {o.order_id for o in watch.seen} == {order.order_id}
    finally:
        await watch.close()


async def test_a_client_that_disconnects_and_resumes_gets_every_missed_update_once_across_a_restart(
    stack: Stack,
) -> None:
    trader = await stack.trader({"USDT": "10000"})
    first = await watching(trader).start()
    order = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.02", price="49000.00")
    await first.until(lambda seen: len(seen) >= 1)
    await first.close()  # the client goes away after processing its first update
    processed = first.sequences[0]

    await stack.price("49000.00", volume="0.005")  # missed: a partial fill
    await trader.wait(order.order_id, lambda o: o.status == pb.ORDER_STATUS_PARTIALLY_FILLED)

    async def while_down() -> None:
        await stack.price("48990.00", volume="0.005")  # missed while the order service is down

    await stack.restart_orders(while_down)
    trader.stub = stack.order_stub
    await trader.wait(order.order_id, lambda o: D(o.filled_quantity) == D("0.01"))
    other = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="45000.00")

    resumed = await Watch(trader.stub, trader.auth, after_sequence=processed).start()
    try:
        await resumed.until(lambda seen: any(o.order_id == other.order_id for o in seen))
        await trader.cancel(other.order_id)  # live, after the replay
        await resumed.until(lambda seen: seen[-1].status == pb.ORDER_STATUS_CANCELLED)
        assert resumed.sequences == list(range(processed + 1, processed + 1 + len(resumed.sequences)))
        fills = [D(o.filled_quantity) for o in resumed.seen if o.order_id == order.order_id]
        assert fills == sorted(fills) and D("0.005") in fills and D("0.01") in fills, "every missed fill, in order"
    finally:
        await resumed.close()
