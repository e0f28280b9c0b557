"""Binance's rate limits: clock-aligned windows, 429 with Retry-After, growing 418 bans. Pure: callers pass ``now``.

- REQUEST_WEIGHT per minute and RAW_REQUESTS per 5 minutes are per IP (every client here is 127.0.0.1).
- ORDERS per 10 seconds and per day count the account's unfilled orders: +1 per accepted order, -1 on an order's
  first fill (only in the windows that counted it, which is what "unfilled" means for a window that has rolled).
- Windows are aligned to the clock: minutes start at :00, 10-second windows at :00, :10, ..., days at 00:00 UTC.
- A 429 tells the client to back off until the window ends (Retry-After, in seconds). A client that sends another
  request before then is banned: HTTP 418, first for ``ban_base_seconds`` (Binance: 2 minutes), doubling with every
  ban, at most 3 days. A 429 for ORDERS only forbids further new orders; other requests go on (cancels matter).
"""

from __future__ import annotations

from dataclasses import dataclass

SECOND_MS = 1000
TEN_SECONDS_MS = 10 * SECOND_MS
MINUTE_MS = 60 * SECOND_MS
FIVE_MINUTES_MS = 5 * MINUTE_MS
DAY_MS = 24 * 60 * MINUTE_MS
MAX_BAN_SECONDS = 3 * 24 * 3600
HISTORY_WINDOWS = 8640
"""How many 10-second windows the statistics keep (one day)."""


class FixedWindow:
    """A counter that resets when the clock enters a new window of ``interval_ms``."""

    __slots__ = ("count", "interval_ms", "start")

    def __init__(self, interval_ms: int):
        self.interval_ms = interval_ms
        self.start = 0
        self.count = 0

    def _roll(self, now: int) -> None:
        start = now - now % self.interval_ms
        if start != self.start:
            self.start = start
            self.count = 0

    def current(self, now: int) -> int:
        """The count in the window that contains ``now``."""
        self._roll(now)
        return self.count

    def add(self, now: int, amount: int = 1) -> int:
        """Add to the current window; return its new count."""
        self._roll(now)
        self.count += amount
        return self.count

    def window_start(self, at: int) -> int:
        return at - at % self.interval_ms

    def end(self, now: int) -> int:
        """When the window containing ``now`` ends (epoch ms)."""
        return self.window_start(now) + self.interval_ms


@dataclass
class Limits:
    """The limits in force (exchangeInfo.rateLimits shows them)."""

    weight_per_minute: int
    orders_per_10s: int
    orders_per_day: int
    raw_requests_per_5m: int
    ban_base_seconds: int


@dataclass(frozen=True)
class Rejection:
    """A request refused by a rate limit: HTTP status, Binance code and message, Retry-After in seconds."""

    status: int
    code: int
    msg: str
    retry_after: int
    retry_at_ms: int


def _ceil_seconds(ms: int) -> int:
    return max(1, -(-ms // SECOND_MS))


class RateLimiter:
    """The simulator's single IP and single account, as Binance's limiters see them."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.weight = FixedWindow(MINUTE_MS)
        self.raw = FixedWindow(FIVE_MINUTES_MS)
        self.orders_10s = FixedWindow(TEN_SECONDS_MS)
        self.orders_day = FixedWindow(DAY_MS)
        self.backoff_until = 0
        self.order_backoff_until = 0
        self.banned_until = 0
        self.bans = 0
        self.http_429 = 0
        self.http_418 = 0
        self.orders_per_10s_window: dict[int, int] = {}
        self.weight_per_minute_window: dict[int, int] = {}

    # ------------------------------------------------------------------ requests (weight, raw, bans)

    def admit(self, weight: int, now: int) -> Rejection | None:
        """Charge a request's weight before it is processed; return why it is refused, or None."""
        if now < self.banned_until:
            self.http_418 += 1
            return self._banned(now)
        if now < self.backoff_until:
            return self._ban(now)
        raw = self.raw.add(now)
        used = self.weight.add(now, weight)
        minute = self.weight.start
        self.weight_per_minute_window[minute] = used
        if len(self.weight_per_minute_window) > HISTORY_WINDOWS:
            del self.weight_per_minute_window[next(iter(self.weight_per_minute_window))]
        if raw > self.limits.raw_requests_per_5m:
            self.backoff_until = self.raw.end(now)
            self.http_429 += 1
            return Rejection(
                429,
                -1003,
                f"Too many requests; current limit is {self.limits.raw_requests_per_5m} requests per 5 MINUTE.",
                _ceil_seconds(self.backoff_until - now),
                self.backoff_until,
            )
        if used > self.limits.weight_per_minute:
            self.backoff_until = self.weight.end(now)
            self.http_429 += 1
            return Rejection(
                429,
                -1003,
                f"Too much request weight used; current limit is {self.limits.weight_per_minute} request weight "
                "per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
                _ceil_seconds(self.backoff_until - now),
                self.backoff_until,
            )
        return None

    def _ban(self, now: int) -> Rejection:
        seconds = min(self.limits.ban_base_seconds * (2**self.bans), MAX_BAN_SECONDS)
        self.bans += 1
        self.banned_until = now + seconds * SECOND_MS
        # The ban is the penalty; once it is over the client starts again from the limits.
        self.backoff_until = 0
        self.order_backoff_until = 0
        self.http_418 += 1
        return self._banned(now)

    def _banned(self, now: int) -> Rejection:
        return Rejection(
            418,
            -1003,
            f"Way too much request weight used; IP banned until {self.banned_until}. "
            "Please use WebSocket Streams for live updates to avoid bans.",
            _ceil_seconds(self.banned_until - now),
            self.banned_until,
        )

    # ------------------------------------------------------------------ orders (unfilled order count)

    def admit_order(self, now: int) -> Rejection | None:
        """Refuse a new order when an ORDERS window is full (429 -1015), or ban one sent during that back-off."""
        if now < self.order_backoff_until:
            return self._ban(now)
        for window, limit, interval in (
            (self.orders_10s, self.limits.orders_per_10s, "10 SECOND"),
            (self.orders_day, self.limits.orders_per_day, "1 DAY"),
        ):
            if window.current(now) >= limit:
                self.order_backoff_until = window.end(now)
                self.http_429 += 1
                return Rejection(
                    429,
                    -1015,
                    f"Too many new orders; current limit is {limit} orders per {interval}.",
                    _ceil_seconds(self.order_backoff_until - now),
                    self.order_backoff_until,
                )
        return None

    def count_order(self, now: int) -> None:
        """Count an accepted order in every ORDERS window (and in the statistics)."""
        self.orders_10s.add(now)
        self.orders_day.add(now)
        start = self.orders_10s.start
        history = self.orders_per_10s_window
        history[start] = history.get(start, 0) + 1
        if len(history) > HISTORY_WINDOWS:
            del history[next(iter(history))]

    def uncount_order(self, placed_ms: int, now: int) -> None:
        """An order filled for the first time: it no longer counts as unfilled in the windows that counted it."""
        for window in (self.orders_10s, self.orders_day):
            window.current(now)
            if window.start == window.window_start(placed_ms) and window.count > 0:
                window.count -= 1

    # ------------------------------------------------------------------ reporting

    def used_weight(self, now: int) -> int:
        return self.weight.current(now)

    def order_count_10s(self, now: int) -> int:
        return self.orders_10s.current(now)

    def order_count_day(self, now: int) -> int:
        return self.orders_day.current(now)

    def exchange_info_limits(self) -> list[dict[str, object]]:
        """exchangeInfo's ``rateLimits``."""
        return [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": self.limits.weight_per_minute,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": self.limits.orders_per_10s},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": self.limits.orders_per_day},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": self.limits.raw_requests_per_5m,
            },
        ]

    def order_limits(self, now: int) -> list[dict[str, object]]:
        """``GET /api/v3/rateLimit/order``: the ORDERS limits with their current counts."""
        return [
            {
                "rateLimitType": "ORDERS",
                "interval": "SECOND",
                "intervalNum": 10,
                "limit": self.limits.orders_per_10s,
                "count": self.order_count_10s(now),
            },
            {
                "rateLimitType": "ORDERS",
                "interval": "DAY",
                "intervalNum": 1,
                "limit": self.limits.orders_per_day,
                "count": self.order_count_day(now),
            },
        ]

    def weight_limit_status(self, now: int) -> dict[str, object]:
        """The REQUEST_WEIGHT entry of a WebSocket API response's ``rateLimits``."""
        return {
            "rateLimitType": "REQUEST_WEIGHT",
            "interval": "MINUTE",
            "intervalNum": 1,
            "limit": self.limits.weight_per_minute,
            "count": self.used_weight(now),
        }
