"""The rate limiter, driven by a hand-moved clock (no timers, no sleeping)."""

from __future__ import annotations

import asyncio

import pytest

from services.exchange_gateway.adapters.binance.rate_limiter import (
    Cost,
    LimitRule,
    Priority,
    RateLimiter,
)
from shared.errors import ResourceExhausted

T0 = 1_800_000_000_000.0  # aligned to every window (10 s, minute, 5 minutes, day)
GUARD = 100.0
ORDER = Cost(weight=1, orders=1)
CANCEL = Cost(weight=1)
QUERY = Cost(weight=4)


class Clock:
    def __init__(self, t: float = T0 + 500):
        self.t = t

    def __call__(self) -> float:
        return self.t


def limiter(clock: Clock, *rules: LimitRule) -> RateLimiter:
    return RateLimiter(clock, rules, margin=0.0, guard_ms=GUARD, timers=False)


def orders(per_10s: int, weight: int = 6000) -> tuple[LimitRule, ...]:
    return (
        LimitRule("REQUEST_WEIGHT", "MINUTE", 1, weight),
        LimitRule("ORDERS", "SECOND", 10, per_10s),
        LimitRule("ORDERS", "DAY", 1, 160_000),
        LimitRule("RAW_REQUESTS", "MINUTE", 5, 300_000),
    )


async def start(lim: RateLimiter, priority: Priority, cost: Cost, deadline: float | None = None) -> asyncio.Task:
    task = asyncio.create_task(lim.acquire(priority, cost, deadline))
    await asyncio.sleep(0)
    return task


def used(lim: RateLimiter, kind: str, interval: str = "SECOND") -> int:
    return next(u.used for u in lim.status().limits if u.rule.rate_limit_type == kind and u.rule.interval == interval)


async def test_orders_fill_the_window_then_wait_for_the_next_one_plus_the_guard():
    clock = Clock()
    lim = limiter(clock, *orders(10))
    for _ in range(10):
        await lim.acquire(Priority.ORDER, ORDER)
    waiting = await start(lim, Priority.ORDER, ORDER)
    assert not waiting.done()
    assert lim.status().queued[Priority.ORDER] == 1

    clock.t = T0 + 10_000 + GUARD / 2  # the next window has begun, but a request might still land in the old one
    lim.pump()
    await asyncio.sleep(0)
    assert not waiting.done()

    clock.t = T0 + 10_000 + GUARD
    lim.pump()
    await asyncio.sleep(0)
    assert waiting.done()
    assert used(lim, "ORDERS") == 1


async def test_a_request_let_through_at_the_end_of_a_window_counts_in_the_next_one_too():
    clock = Clock(T0 + 10_000 - GUARD / 2)
    lim = limiter(clock, *orders(2))
    await lim.acquire(Priority.ORDER, ORDER)
    clock.t = T0 + 10_000 + GUARD
    assert used(lim, "ORDERS") == 1
    await lim.acquire(Priority.ORDER, ORDER)
    blocked = await start(lim, Priority.ORDER, ORDER)
    assert not blocked.done()
    blocked.cancel()


async def test_cancels_go_before_new_orders_before_queries():
    clock = Clock()
    lim = limiter(clock, LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 4))
    await lim.acquire(Priority.QUERY, QUERY)  # the minute is used up
    query = await start(lim, Priority.QUERY, QUERY)
    order = await start(lim, Priority.ORDER, Cost(weight=4))
    cancel = await start(lim, Priority.CANCEL, Cost(weight=4))
    granted = []
    for minute in (1, 2, 3):
        clock.t = T0 + minute * 60_000 + GUARD
        lim.pump()
        await asyncio.sleep(0)
        granted.append([name for name, t in (("cancel", cancel), ("order", order), ("query", query)) if t.done()])
    assert granted == [["cancel"], ["cancel", "order"], ["cancel", "order", "query"]]


async def test_a_new_order_waiting_for_orders_capacity_does_not_hold_up_a_query():
    clock = Clock()
    lim = limiter(clock, *orders(1))
    await lim.acquire(Priority.ORDER, ORDER)
    order = await start(lim, Priority.ORDER, ORDER)
    query = await start(lim, Priority.QUERY, QUERY)
    assert query.done() and not order.done()
    order.cancel()


async def test_a_waiter_that_cannot_make_its_deadline_fails_at_once_with_retry_info():
    clock = Clock()
    lim = limiter(clock, *orders(1))
    await lim.acquire(Priority.ORDER, ORDER)
    with pytest.raises(ResourceExhausted) as caught:
        await lim.acquire(Priority.ORDER, ORDER, deadline=clock.t + 5_000)
    # Capacity returns at the next window (T0 + 10 s) plus the guard: 9.6 s from now.
    assert caught.value.retry_after == pytest.approx(9.6, abs=0.01)
    assert lim.status().queued[Priority.ORDER] == 0
    ok = await start(lim, Priority.ORDER, ORDER, deadline=clock.t + 9_700)
    assert not ok.done()
    ok.cancel()


async def test_the_deadline_projection_counts_the_queue_ahead():
    clock = Clock()
    lim = limiter(clock, *orders(2))
    for _ in range(2):
        await lim.acquire(Priority.ORDER, ORDER)
    ahead = [await start(lim, Priority.ORDER, ORDER, deadline=clock.t + 25_000) for _ in range(2)]
    # Two are already waiting for the next window, so a third needs the one after it (T0 + 20.1 s).
    with pytest.raises(ResourceExhausted) as caught:
        await lim.acquire(Priority.ORDER, ORDER, deadline=clock.t + 15_000)
    assert caught.value.retry_after == pytest.approx(19.6, abs=0.01)
    for task in ahead:
        task.cancel()


async def test_a_cancel_jumping_the_queue_fails_a_waiter_that_can_no_longer_make_it():
    clock = Clock()
    lim = limiter(clock, LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 1))
    await lim.acquire(Priority.QUERY, CANCEL)
    order = await start(lim, Priority.ORDER, CANCEL, deadline=clock.t + 90_000)
    assert not order.done()
    cancel = await start(lim, Priority.CANCEL, CANCEL, deadline=clock.t + 90_000)
    await asyncio.sleep(0)
    # The cancel takes the next minute's only unit; the order would need the minute after, past its deadline.
    assert order.done() and isinstance(order.exception(), ResourceExhausted)
    assert not cancel.done()
    cancel.cancel()


async def test_usage_headers_raise_the_local_count():
    clock = Clock()
    lim = limiter(clock, LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 10))
    grant = await lim.acquire(Priority.QUERY, CANCEL)
    lim.observe({"x-mbx-used-weight-1m": "9"}, grant)
    assert used(lim, "REQUEST_WEIGHT", "MINUTE") == 9
    lim.observe({"x-mbx-used-weight-1m": "3"}, grant)  # lower than ours: keep ours
    assert used(lim, "REQUEST_WEIGHT", "MINUTE") == 9
    await lim.acquire(Priority.QUERY, CANCEL)
    blocked = await start(lim, Priority.QUERY, CANCEL)
    assert not blocked.done()
    blocked.cancel()


async def test_order_count_headers_and_stale_windows():
    clock = Clock()
    lim = limiter(clock, *orders(10))
    grant = await lim.acquire(Priority.ORDER, ORDER)
    lim.observe({"x-mbx-order-count-10s": "7", "x-mbx-order-count-1d": "500"}, grant)
    assert used(lim, "ORDERS") == 7
    assert used(lim, "ORDERS", "DAY") == 500
    # An answer that arrives in the next window describes the old one: it must not fill the new one.
    clock.t = T0 + 10_000 + 200
    lim.observe({"x-mbx-order-count-10s": "10"}, grant)
    assert used(lim, "ORDERS") == 0


async def test_retry_after_pauses_everything_until_it_ends():
    clock = Clock()
    lim = limiter(clock, *orders(10))
    lim.pause(2.0, status=429)
    assert lim.status().http_429 == 1
    assert lim.status().backoff_until_ms == pytest.approx(clock.t + 2000)
    cancel = await start(lim, Priority.CANCEL, CANCEL)
    assert not cancel.done()
    with pytest.raises(ResourceExhausted):
        await lim.acquire(Priority.QUERY, CANCEL, deadline=clock.t + 1000)
    clock.t += 2000
    lim.pump()
    await asyncio.sleep(0)
    assert cancel.done()


async def test_a_ban_is_counted_and_paused_like_a_429():
    clock = Clock()
    lim = limiter(clock, *orders(10))
    lim.pause(120.0, status=418)
    status = lim.status()
    assert status.http_418 == 1 and status.http_429 == 0
    assert status.backoff_until_ms == pytest.approx(clock.t + 120_000)


async def test_a_pause_that_outlasts_a_deadline_fails_the_waiter_at_once():
    clock = Clock()
    lim = limiter(clock, LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 1))
    await lim.acquire(Priority.QUERY, CANCEL)
    waiter = await start(lim, Priority.QUERY, CANCEL, deadline=T0 + 60_000 + GUARD + 10)
    assert not waiter.done()
    lim.pause(70.0, status=429)
    await asyncio.sleep(0)
    assert isinstance(waiter.exception(), ResourceExhausted)


async def test_a_waiter_still_queued_at_its_deadline_fails_on_the_next_tick():
    clock = Clock()
    lim = limiter(clock, LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 1))
    await lim.acquire(Priority.QUERY, CANCEL)
    waiter = await start(lim, Priority.QUERY, CANCEL, deadline=T0 + 60_000 + GUARD + 10)
    lim.limits[0].counts[int((T0 + 60_000) // 60_000)] = 1  # something used the next minute behind our back
    clock.t = T0 + 60_000 + GUARD + 20
    lim.tick()
    await asyncio.sleep(0)
    assert isinstance(waiter.exception(), ResourceExhausted)


async def test_exchange_info_limits_replace_the_defaults_and_keep_counts():
    clock = Clock()
    lim = limiter(clock, *orders(50))
    await lim.acquire(Priority.ORDER, ORDER)
    lim.configure(orders(3))
    assert next(u for u in lim.status().limits if u.rule.interval == "SECOND").rule.limit == 3
    assert used(lim, "ORDERS") == 1
    await lim.acquire(Priority.ORDER, ORDER)
    await lim.acquire(Priority.ORDER, ORDER)
    blocked = await start(lim, Priority.ORDER, ORDER)
    assert not blocked.done()
    blocked.cancel()


async def test_margin_keeps_a_share_of_large_limits_free():
    lim = RateLimiter(Clock(), (LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 6000),), margin=0.02, timers=False)
    assert lim.limits[0].capacity == 5880
    small = RateLimiter(Clock(), (LimitRule("ORDERS", "SECOND", 10, 10),), margin=0.02, timers=False)
    assert small.limits[0].capacity == 10


async def test_a_request_bigger_than_the_limit_fails_at_once():
    lim = limiter(Clock(), LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 10))
    with pytest.raises(ResourceExhausted):
        await lim.acquire(Priority.QUERY, Cost(weight=20))


async def test_a_cancelled_waiter_leaves_the_queue():
    clock = Clock()
    lim = limiter(clock, *orders(1))
    await lim.acquire(Priority.ORDER, ORDER)
    waiting = await start(lim, Priority.ORDER, ORDER)
    waiting.cancel()
    await asyncio.sleep(0)
    assert lim.status().queued[Priority.ORDER] == 0


async def test_deadlines_are_local_time_and_survive_a_clock_resync():
    local = Clock()
    offset = [0.0]
    lim = RateLimiter(lambda: local.t + offset[0], orders(1), margin=0.0, guard_ms=GUARD, timers=False, local=local)
    await lim.acquire(Priority.ORDER, ORDER)
    waiter = await start(lim, Priority.ORDER, ORDER, deadline=local.t + 15_000)
    assert not waiter.done()
    offset[0] = 10_000.0  # resync: the exchange clock is 10 s ahead of what we thought
    lim.tick()
    await asyncio.sleep(0)
    assert waiter.done() and waiter.exception() is None  # now in the next window; the deadline did not move


# --- fair shares: new orders of different keys go in turn ------------------------------------------


def queue_order(
    lim: RateLimiter, granted: list[str], name: str, key: str | None, deadline: float | None = None
) -> asyncio.Task:
    """An order of ``key`` (None: no key given) that appends ``name`` to ``granted`` when let through."""

    async def go() -> None:
        if key is None:
            await lim.acquire(Priority.ORDER, ORDER, deadline)
        else:
            await lim.acquire(Priority.ORDER, ORDER, deadline, fair_share_key=key)
        granted.append(name)

    return asyncio.create_task(go())


async def next_window(lim: RateLimiter, clock: Clock, window: int) -> None:
    clock.t = T0 + window * 10_000 + GUARD
    lim.pump()
    for _ in range(3):
        await asyncio.sleep(0)


async def test_new_orders_of_several_keys_are_let_through_one_of_each_in_turn():
    clock = Clock()
    lim = limiter(clock, *orders(6))
    for _ in range(6):  # the window is full: everything below waits for the next one
        await lim.acquire(Priority.ORDER, ORDER)
    granted: list[str] = []
    tasks = [queue_order(lim, granted, f"alice-{i}", "alice") for i in range(3)]
    tasks += [queue_order(lim, granted, f"bob-{i}", "bob") for i in range(2)]
    tasks += [queue_order(lim, granted, "carol-0", "carol")]
    await asyncio.sleep(0)
    assert lim.status().queued[Priority.ORDER] == 6
    await next_window(lim, clock, 1)
    assert granted == ["alice-0", "bob-0", "carol-0", "alice-1", "bob-1", "alice-2"]
    assert all(task.done() for task in tasks)


async def test_a_single_order_of_another_key_goes_in_the_next_slot_after_a_burst():
    clock = Clock()
    lim = limiter(clock, *orders(5))
    granted: list[str] = []
    burst = [queue_order(lim, granted, f"alice-{i:03d}", "alice") for i in range(200)]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert granted == [f"alice-{i:03d}" for i in range(5)]  # the first window's share went at once
    single = queue_order(lim, granted, "bob", "bob")
    await asyncio.sleep(0)
    assert not single.done()
    await next_window(lim, clock, 1)
    # One of alice's 195 waiting orders goes before bob's, not all of them.
    assert granted[5:] == ["alice-005", "bob", "alice-006", "alice-007", "alice-008"]
    assert single.done()
    for task in burst:
        task.cancel()
    await asyncio.gather(*burst, return_exceptions=True)
    assert lim.status().queued[Priority.ORDER] == 0


async def test_a_key_let_through_waits_for_every_other_key_before_its_next_turn():
    clock = Clock()
    lim = limiter(clock, *orders(1))
    await lim.acquire(Priority.ORDER, ORDER)
    granted: list[str] = []
    tasks = [queue_order(lim, granted, f"alice-{i}", "alice") for i in range(3)]
    tasks += [queue_order(lim, granted, f"bob-{i}", "bob") for i in range(2)]
    await asyncio.sleep(0)
    for window in range(1, 6):  # one order per window: the turn carries over from window to window
        await next_window(lim, clock, window)
    assert granted == ["alice-0", "bob-0", "alice-1", "bob-1", "alice-2"]
    assert all(task.done() for task in tasks)


async def test_the_orders_of_one_key_keep_their_order():
    clock = Clock()
    lim = limiter(clock, *orders(2))
    for _ in range(2):
        await lim.acquire(Priority.ORDER, ORDER)
    granted: list[str] = []
    names = ["alice-0", "bob-0", "alice-1", "alice-2", "bob-1", "alice-3"]
    tasks = [queue_order(lim, granted, name, name.split("-")[0]) for name in names]
    await asyncio.sleep(0)
    for window in (1, 2, 3):
        await next_window(lim, clock, window)
    assert granted == ["alice-0", "bob-0", "alice-1", "bob-1", "alice-2", "alice-3"]
    assert [n for n in granted if n.startswith("alice")] == ["alice-0", "alice-1", "alice-2", "alice-3"]
    assert all(task.done() for task in tasks)


async def test_cancels_still_go_before_the_new_orders_of_every_key():
    clock = Clock()
    lim = limiter(clock, LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 2), LimitRule("ORDERS", "SECOND", 10, 100))
    await lim.acquire(Priority.QUERY, Cost(weight=2))  # the minute is used up
    granted: list[str] = []
    orders_ = [queue_order(lim, granted, name, name.split("-")[0]) for name in ("alice-0", "alice-1", "bob-0")]

    async def cancel() -> None:
        await lim.acquire(Priority.CANCEL, CANCEL)
        granted.append("cancel")

    cancelling = asyncio.create_task(cancel())
    await asyncio.sleep(0)
    rounds = []
    for minute in (1, 2):
        clock.t = T0 + minute * 60_000 + GUARD
        lim.pump()
        for _ in range(3):
            await asyncio.sleep(0)
        rounds.append(list(granted))
        granted.clear()
    assert rounds == [["cancel", "alice-0"], ["bob-0", "alice-1"]]
    assert cancelling.done() and all(task.done() for task in orders_)


async def test_the_single_order_of_a_second_key_is_not_failed_while_the_burst_keys_last_one_is():
    clock = Clock()
    lim = limiter(clock, *orders(10))
    for _ in range(10):
        await lim.acquire(Priority.ORDER, ORDER)
    # Deadline 10 s from now: the next window (T0 + 10.1 s) can be made, the one after it cannot.
    deadline = clock.t + 10_000
    granted: list[str] = []
    burst = [queue_order(lim, granted, f"alice-{i}", "alice", deadline) for i in range(10)]
    await asyncio.sleep(0)
    assert not any(task.done() for task in burst)  # ten fit in the next window

    single = queue_order(lim, granted, "bob", "bob", deadline)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    # Bob's order projects to the second slot of the next window, so it is queued; alice's last one
    # is pushed to the window after, past its deadline, and fails at once.
    assert not single.done()
    assert burst[-1].done() and isinstance(burst[-1].exception(), ResourceExhausted)
    assert burst[-1].exception().retry_after == pytest.approx(19.6, abs=0.01)
    assert not any(task.done() for task in burst[:-1])

    with pytest.raises(ResourceExhausted):  # and a further order of alice's cannot make it either
        await lim.acquire(Priority.ORDER, ORDER, deadline, fair_share_key="alice")

    await next_window(lim, clock, 1)
    assert granted == ["alice-0", "bob"] + [f"alice-{i}" for i in range(1, 9)]


async def test_a_new_key_projects_behind_one_order_of_each_other_key():
    clock = Clock()
    lim = limiter(clock, *orders(3))
    for _ in range(3):
        await lim.acquire(Priority.ORDER, ORDER)
    granted: list[str] = []
    waiting = [queue_order(lim, granted, f"alice-{i}", "alice") for i in range(9)]
    waiting += [queue_order(lim, granted, f"bob-{i}", "bob") for i in range(9)]
    await asyncio.sleep(0)
    # Behind alice-0 and bob-0: third in the next window, which a deadline just after it starts allows.
    carol = queue_order(lim, granted, "carol", "carol", deadline=T0 + 10_000 + GUARD + 1)
    await asyncio.sleep(0)
    assert not carol.done()
    # A second order of carol's would be behind alice-1 and bob-1 too: the window after.
    with pytest.raises(ResourceExhausted) as caught:
        await lim.acquire(Priority.ORDER, ORDER, T0 + 10_000 + GUARD + 1, fair_share_key="carol")
    assert caught.value.retry_after == pytest.approx(19.6, abs=0.01)
    await next_window(lim, clock, 1)
    assert granted == ["alice-0", "bob-0", "carol"]
    for task in waiting:
        task.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)


async def test_orders_without_a_key_share_one_turn():
    clock = Clock()
    lim = limiter(clock, *orders(4))
    for _ in range(4):
        await lim.acquire(Priority.ORDER, ORDER)
    granted: list[str] = []
    tasks = [queue_order(lim, granted, f"none-{i}", None) for i in range(2)]
    tasks.append(queue_order(lim, granted, "empty", ""))
    tasks.append(queue_order(lim, granted, "bob", "bob"))
    await asyncio.sleep(0)
    await next_window(lim, clock, 1)
    # No key and the empty key are one key: bob's order goes after the first of them, not after all three.
    assert granted == ["none-0", "bob", "none-1", "empty"]
    assert all(task.done() for task in tasks)


async def test_a_key_whose_waiter_leaves_keeps_its_turn_for_its_next_one():
    clock = Clock()
    lim = limiter(clock, *orders(3))
    for _ in range(3):
        await lim.acquire(Priority.ORDER, ORDER)
    granted: list[str] = []
    alice = [queue_order(lim, granted, f"alice-{i}", "alice") for i in range(3)]
    bob = queue_order(lim, granted, "bob-0", "bob")
    await asyncio.sleep(0)
    alice[0].cancel()  # the caller went away
    await asyncio.sleep(0)
    assert lim.status().queued[Priority.ORDER] == 3
    await next_window(lim, clock, 1)
    assert granted == ["alice-1", "bob-0", "alice-2"]
    assert bob.done() and all(task.done() for task in alice)
