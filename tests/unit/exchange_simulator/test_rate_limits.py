"""Binance's rate limits with a hand-driven clock: aligned windows, 429 with Retry-After, 418 bans that grow."""

from __future__ import annotations

from services.exchange_simulator.rate_limits import (
    DAY_MS,
    MAX_BAN_SECONDS,
    MINUTE_MS,
    FixedWindow,
    Limits,
    RateLimiter,
)

T0 = 1_700_000_040_000  # 14:14:00 UTC: a minute (and a 10-second window) starts here
assert T0 % MINUTE_MS == 0


def limiter(**overrides: int) -> RateLimiter:
    values = {
        "weight_per_minute": 6000,
        "orders_per_10s": 50,
        "orders_per_day": 160_000,
        "raw_requests_per_5m": 300_000,
        "ban_base_seconds": 120,
    }
    values.update(overrides)
    return RateLimiter(Limits(**values))


def test_windows_are_aligned_to_the_clock_not_rolling() -> None:
    minute = FixedWindow(MINUTE_MS)
    assert minute.add(T0 + 59_999, 10) == 10  # last millisecond of the minute
    assert minute.add(T0 + 60_000, 1) == 1  # the next minute starts at :00, whatever happened before
    ten = FixedWindow(10_000)
    ten.add(T0 + 9_999)
    assert ten.current(T0 + 10_000) == 0
    assert ten.end(T0 + 12_345) == T0 + 20_000
    day = FixedWindow(DAY_MS)
    assert day.window_start(T0) % DAY_MS == 0  # 00:00 UTC


def test_weight_is_charged_and_over_the_limit_answers_429_with_seconds_to_the_window_end() -> None:
    rl = limiter(weight_per_minute=100)
    assert rl.admit(60, T0) is None
    assert rl.admit(40, T0 + 1_000) is None
    assert rl.used_weight(T0 + 1_000) == 100

    rejection = rl.admit(1, T0 + 15_500)
    assert rejection is not None
    assert (rejection.status, rejection.code) == (429, -1003)
    assert rejection.msg == (
        "Too much request weight used; current limit is 100 request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API."
    )
    assert rejection.retry_after == 45  # 44.5 s left in the minute, rounded up
    assert rl.http_429 == 1


def test_a_client_that_keeps_going_after_429_is_banned_with_418_and_bans_double() -> None:
    rl = limiter(weight_per_minute=1, ban_base_seconds=120)
    rl.admit(1, T0)
    assert rl.admit(1, T0 + 1).status == 429  # type: ignore[union-attr]

    ban = rl.admit(1, T0 + 2)  # before Retry-After passed
    assert ban is not None and (ban.status, ban.code, ban.retry_after) == (418, -1003, 120)
    assert ban.msg == (
        f"Way too much request weight used; IP banned until {T0 + 2 + 120_000}. "
        "Please use WebSocket Streams for live updates to avoid bans."
    )
    during = rl.admit(1, T0 + 60_002)
    assert during is not None and (during.status, during.retry_after) == (418, 60)

    # After the ban: over the limit again (429), and again ignoring it gives a ban twice as long.
    later = T0 + 10 * MINUTE_MS
    assert rl.admit(1, later) is None
    assert rl.admit(1, later + 1).status == 429  # type: ignore[union-attr]
    second = rl.admit(1, later + 2)
    assert second is not None and (second.status, second.retry_after) == (418, 240)
    assert rl.http_418 == 3


def test_bans_are_capped_at_three_days() -> None:
    rl = limiter(weight_per_minute=1, ban_base_seconds=120)
    now = T0
    last = None
    for _ in range(15):
        now += 4 * DAY_MS
        rl.admit(1, now)
        rl.admit(1, now + 1)
        last = rl.admit(1, now + 2)
    assert last is not None and last.retry_after == MAX_BAN_SECONDS


def test_orders_over_the_10_second_limit_answer_429_1015_and_only_new_orders_are_banned() -> None:
    rl = limiter(orders_per_10s=3)
    for i in range(3):
        assert rl.admit_order(T0 + i) is None
        rl.count_order(T0 + i)
    assert rl.order_count_10s(T0 + 3) == 3

    rejection = rl.admit_order(T0 + 2_500)
    assert rejection is not None
    assert (rejection.status, rejection.code, rejection.retry_after) == (429, -1015, 8)
    assert rejection.msg == "Too many new orders; current limit is 3 orders per 10 SECOND."
    assert rl.admit(1, T0 + 2_600) is None  # cancels and queries go on
    ban = rl.admit_order(T0 + 2_700)  # another new order before Retry-After
    assert ban is not None and ban.status == 418

    assert limiter(orders_per_10s=3).admit_order(T0 + 10_000) is None


def test_daily_order_limit() -> None:
    rl = limiter(orders_per_day=2)
    rl.count_order(T0)
    rl.count_order(T0 + 20_000)
    rejection = rl.admit_order(T0 + 40_000)
    assert rejection is not None and rejection.msg == "Too many new orders; current limit is 2 orders per 1 DAY."


def test_first_fill_decrements_the_unfilled_order_count_only_in_windows_that_counted_the_order() -> None:
    rl = limiter()
    rl.count_order(T0 + 1_000)
    rl.count_order(T0 + 2_000)
    rl.uncount_order(T0 + 1_000, T0 + 3_000)
    assert rl.order_count_10s(T0 + 3_000) == 1
    assert rl.order_count_day(T0 + 3_000) == 1

    # Placed in an earlier 10-second window: that window is gone; only the day still counts it.
    rl.uncount_order(T0 + 2_000, T0 + 12_000)
    assert rl.order_count_10s(T0 + 12_000) == 0
    assert rl.order_count_day(T0 + 12_000) == 0
    # The statistics keep what was accepted per window, fills or not.
    assert rl.orders_per_10s_window == {T0: 2}


def test_exchange_info_reports_the_limits_in_force() -> None:
    rl = limiter(orders_per_10s=7)
    assert {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 7} in (
        rl.exchange_info_limits()
    )
    assert rl.exchange_info_limits()[0] == {
        "rateLimitType": "REQUEST_WEIGHT",
        "interval": "MINUTE",
        "intervalNum": 1,
        "limit": 6000,
    }
