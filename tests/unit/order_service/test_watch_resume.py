"""WatchOrders resumes where a client left off: every missed update once, also across a restart."""

from __future__ import annotations

import asyncio

import pytest

from services.order_service.domain.model import Order, OrderType, Side
from services.order_service.domain.placement import NewOrderRequest
from services.order_service.domain.states import Status
from services.order_service.service.deadline import Deadline
from shared.errors import InvalidArgument, OutOfRange

from .conftest import ALICE, Harness, limit_buy


async def take(feed_iter, n: int) -> list[tuple[Order, int]]:  # type: ignore[no-untyped-def]
    got = []
    async with asyncio.timeout(5):
        async for item in feed_iter:
            got.append(item)
            if len(got) == n:
                break
    return got


async def test_a_client_that_resumes_after_a_restart_gets_every_missed_update_once_then_live(harness: Harness) -> None:
    h = harness
    first = await h.place(limit_buy())
    await h.gateway.trade(first.order_id, "0.005", "49000.00")
    await h.settle()
    recorded = await h.app.store.updates_after(ALICE, 0, 100)
    assert [s for s, _ in recorded] == list(range(1, len(recorded) + 1))
    seen_by_client = recorded[0][0]  # the client processed only the first update, then went away

    await h.crash()
    await h.restart()
    second = await h.place(limit_buy())  # while the client is away, after the restart

    subscription = h.app.feed.subscribe(ALICE, "")
    stream = h.app.feed.follow(subscription, seen_by_client)
    missed = await take(stream, len(recorded) - 1 + 1)
    sequences = [s for _, s in missed]
    assert sequences == list(range(seen_by_client + 1, seen_by_client + 1 + len(missed))), "none missed, none twice"
    assert missed[-1][0].order_id == second.order_id
    # Then live, continuing the same numbering with nothing doubled at the seam.
    await h.app.cancel_order(h.alice, second.order_id, Deadline.after(5))
    live = await take(stream, 2)
    assert [s for _, s in live] == [sequences[-1] + 1, sequences[-1] + 2]
    assert live[-1][0].status is Status.CANCELLED
    await stream.aclose()


async def test_a_symbol_filter_skips_other_symbols_without_breaking_the_sequence(harness: Harness) -> None:
    h = harness
    eth_request = NewOrderRequest(
        symbol="ETHUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity="0.1000", price="2900.00"
    )
    eth = await h.place(eth_request)
    btc = await h.place(limit_buy())
    subscription = h.app.feed.subscribe(ALICE, "BTCUSDT")
    (only,) = await take(h.app.feed.follow(subscription, 0), 1)
    assert only[0].order_id == btc.order_id and only[1] == 2
    assert eth.order_id != btc.order_id


async def test_a_resume_point_older_than_what_is_kept_is_out_of_range_and_a_negative_one_is_invalid(
    harness: Harness,
) -> None:
    h = harness
    for _ in range(3):
        await h.place(limit_buy())
    await h.app.store.prune_updates(h.app.core.clock() + 1)  # everything is old now, but each user's newest
    kept = await h.app.store.updates_after(ALICE, 0, 10)
    assert [s for s, _ in kept] == [3]
    with pytest.raises(OutOfRange):
        await take(h.app.feed.follow(h.app.feed.subscribe(ALICE, ""), 1), 1)
    resumed = await take(h.app.feed.follow(h.app.feed.subscribe(ALICE, ""), 2), 1)
    assert [s for _, s in resumed] == [3]
    with pytest.raises(InvalidArgument):
        await take(h.app.feed.follow(h.app.feed.subscribe(ALICE, ""), -1), 1)
