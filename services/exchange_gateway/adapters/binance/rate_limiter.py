"""Keeps every request inside Binance's limits, so that the exchange never has to answer 429.

Model (the Binance Spot API documentation, rest-api.md "LIMITS"):
- The limits are the ``rateLimits`` of exchangeInfo (REQUEST_WEIGHT per IP, ORDERS per account
  per 10 s and per day, RAW_REQUESTS), replaced whenever exchangeInfo is read again.
- Windows are fixed and aligned to the exchange's clock (a 10 SECOND window starts at :00, :10...,
  a DAY at 00:00 UTC): the window of a request is ``floor(exchange_time / span)``.
- Every request is charged its documented weight, one RAW request and, for a new order, one
  ORDER in every ORDERS window, when it is let through.
- A request let through in the last ``guard_ms`` of a window may reach the exchange in the next
  window, so it is charged to both; a request that waits for the next window is let through
  ``guard_ms`` after the window starts, so it cannot land in the full one. Both guards cover the
  clock-offset error and the time between being let through and arriving.
- The ``X-MBX-USED-WEIGHT-*`` and ``X-MBX-ORDER-COUNT-*`` headers of every answer raise the local
  count when the exchange counted more (another process on the same IP or account); a header is
  only adopted when the request and the answer fall in the same window.
- 429 pauses everything until ``Retry-After``; 418 until the ban ends.
- Waiters are served by priority (cancels, then new orders, then queries). Within a priority they
  are queued per fair-share key (the user a new order is for; "" when none is given) and let
  through round-robin: one of each key in turn, first come first served within a key. A key that
  has nothing queued joins the turn at its end, so a user's single order waits behind at most one
  waiter of each other key (one slot of the window), however many another user has queued. A
  waiter blocks lower priorities only on the limits it is waiting for: a query that needs only
  weight is not held up by new orders waiting for ORDERS capacity.
- A waiter that cannot be let through before its deadline (projected from the waiters that go
  before it in that same order, the windows and any pause) fails at once with RESOURCE_EXHAUSTED
  and a RetryInfo, rather than waiting and failing later. When the projection gets worse (a
  cancel or another key's order goes ahead of it, a header raises a count, a 429 pauses), waiters
  that can no longer make it fail right then.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import IntEnum

from shared.errors import ResourceExhausted

INTERVAL_MS = {"SECOND": 1_000, "MINUTE": 60_000, "HOUR": 3_600_000, "DAY": 86_400_000}
_LETTER = {"SECOND": "s", "MINUTE": "m", "HOUR": "h", "DAY": "d"}


class Priority(IntEnum):
    CANCEL = 0
    ORDER = 1
    QUERY = 2


@dataclass(frozen=True)
class Cost:
    """What one request uses: its weight, whether it is a new order, and one raw request."""

    weight: int
    orders: int = 0
    raw: int = 1


@dataclass(frozen=True)
class LimitRule:
    """One exchangeInfo rate limit."""

    rate_limit_type: str
    interval: str
    interval_num: int
    limit: int

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.rate_limit_type, self.interval, self.interval_num)


# Used until exchangeInfo has been read (the documented production values).
DEFAULT_RULES = (
    LimitRule("REQUEST_WEIGHT", "MINUTE", 1, 6000),
    LimitRule("ORDERS", "SECOND", 10, 50),
    LimitRule("ORDERS", "DAY", 1, 160_000),
    LimitRule("RAW_REQUESTS", "MINUTE", 5, 300_000),
)


class _Limit:
    def __init__(self, rule: LimitRule, margin: float, guard: float):
        self.rule = rule
        self.span = INTERVAL_MS[rule.interval] * rule.interval_num
        # Keep a small share free for what the headers may not have told us yet.
        self.capacity = max(1, rule.limit - math.floor(rule.limit * margin))
        self.guard = guard
        self.counts: dict[int, int] = {}
        letter = _LETTER[rule.interval]
        if rule.rate_limit_type == "REQUEST_WEIGHT":
            self.header: str | None = f"x-mbx-used-weight-{rule.interval_num}{letter}"
        elif rule.rate_limit_type == "ORDERS":
            self.header = f"x-mbx-order-count-{rule.interval_num}{letter}"
        else:
            self.header = None

    def amount(self, cost: Cost) -> int:
        kind = self.rule.rate_limit_type
        if kind == "REQUEST_WEIGHT":
            return cost.weight
        if kind == "ORDERS":
            return cost.orders
        if kind == "RAW_REQUESTS":
            return cost.raw
        return 0

    def window(self, t: float) -> int:
        return int(t // self.span)

    def used(self, window: int) -> int:
        return self.counts.get(window, 0)

    def free(self, t: float) -> int:
        """Units that may be let through at ``t``.

        In the first ``guard`` ms of a window a request may still land in the previous window at
        the exchange, so it must fit there too.
        """
        w = self.window(t)
        free = self.capacity - self.used(w)
        if t - w * self.span < self.guard:
            free = min(free, self.capacity - self.used(w - 1))
        return free

    def charge(self, t: float, n: int) -> None:
        w = self.window(t)
        offset = t - w * self.span
        self.counts[w] = self.counts.get(w, 0) + n
        if self.span - offset < self.guard:
            self.counts[w + 1] = self.counts.get(w + 1, 0) + n
        if offset < self.guard:
            self.counts[w - 1] = self.counts.get(w - 1, 0) + n
        for old in [k for k in self.counts if k < w - 1]:
            del self.counts[old]

    def next_change(self, t: float) -> float:
        """When ``free`` can next grow: the end of the opening guard, or the next window plus guard."""
        start = self.window(t) * self.span
        if t - start < self.guard:
            return start + self.guard
        return start + self.span + self.guard

    def time_for(self, need: int, base: float) -> float:
        """Earliest time at which ``need`` units (the demand ahead plus one's own) fit."""
        free_now = max(0, self.free(base))
        if need <= free_now:
            return base
        w = self.window(base)
        rest = need - free_now
        if base - w * self.span < self.guard:
            # Still in the opening guard: the rest of this window opens at start + guard.
            room = max(0, self.capacity - self.used(w)) - free_now
            if rest <= room:
                return w * self.span + self.guard
            rest -= room
        free_next = max(0, self.capacity - self.used(w + 1))
        if rest <= free_next:
            return (w + 1) * self.span + self.guard
        rest -= free_next
        return (w + 1 + math.ceil(rest / self.capacity)) * self.span + self.guard


@dataclass(eq=False)
class _Waiter:
    priority: Priority
    cost: Cost
    amounts: tuple[int, ...]
    deadline: float | None
    future: asyncio.Future[Grant]
    key: str = ""


@dataclass(frozen=True)
class Grant:
    """Permission to send one request, let through at exchange time ``at`` (ms)."""

    at: float


@dataclass(frozen=True)
class LimitUsage:
    rule: LimitRule
    used: int
    window_end_ms: int


@dataclass(frozen=True)
class LimiterStatus:
    limits: list[LimitUsage]
    queued: dict[Priority, int]
    backoff_until_ms: float | None
    http_429: int
    http_418: int


def _in_turn(fifos: Iterable[Iterable[_Waiter]]) -> Iterator[_Waiter]:
    """The first waiter of each FIFO in turn, then the second of each, and so on."""
    turn = [iter(fifo) for fifo in fifos]
    while turn:
        still = []
        for fifo in turn:
            waiter = next(fifo, None)
            if waiter is not None:
                yield waiter
                still.append(fifo)
        turn = still


class _Rotation:
    """The waiters of one priority: a FIFO per fair-share key, the keys in the order of their next turn.

    Iterating gives the order in which the waiters are to be let through (one of each key in turn).
    A waiter let through sends its key to the end of the turn; a key with no waiter left leaves it,
    and comes back at the end with its next waiter.
    """

    def __init__(self) -> None:
        self.fifos: dict[str, deque[_Waiter]] = {}

    def __iter__(self) -> Iterator[_Waiter]:
        return _in_turn(self.fifos.values())

    def __len__(self) -> int:
        return sum(len(fifo) for fifo in self.fifos.values())

    def add(self, waiter: _Waiter) -> None:
        self.fifos.setdefault(waiter.key, deque()).append(waiter)

    def remove(self, waiter: _Waiter, *, served: bool = False) -> None:
        fifo = self.fifos.get(waiter.key)
        if fifo is None:
            return
        try:
            fifo.remove(waiter)
        except ValueError:
            return
        if not fifo:
            del self.fifos[waiter.key]
        elif served:
            self.fifos[waiter.key] = self.fifos.pop(waiter.key)  # to the end of the turn


@dataclass
class _Queues:
    by_priority: dict[Priority, _Rotation] = field(default_factory=lambda: {p: _Rotation() for p in Priority})

    def __iter__(self) -> Iterator[_Waiter]:
        """Every waiter, in the order they are to be let through."""
        for p in Priority:
            yield from self.by_priority[p]

    def __len__(self) -> int:
        return sum(len(q) for q in self.by_priority.values())

    def add(self, waiter: _Waiter) -> None:
        self.by_priority[waiter.priority].add(waiter)

    def remove(self, waiter: _Waiter) -> None:
        self.by_priority[waiter.priority].remove(waiter)

    def serve(self, waiter: _Waiter) -> None:
        """Take out a waiter that is let through: its key's turn is over."""
        self.by_priority[waiter.priority].remove(waiter, served=True)


class RateLimiter:
    """Priority queue in front of Binance's fixed-window limits (see the module docstring).

    ``now`` returns exchange time in ms (windows are the exchange's). Deadlines are in ``local``
    time (ms), which does not jump when the clock offset is resynced; by default both are ``now``.
    With ``timers=False`` nothing is scheduled on the loop and a test drives the limiter by moving
    its clock and calling ``pump()``.
    """

    def __init__(
        self,
        now: Callable[[], float],
        rules: Iterable[LimitRule] = DEFAULT_RULES,
        *,
        margin: float = 0.02,
        guard_ms: float = 100.0,
        timers: bool = True,
        local: Callable[[], float] | None = None,
    ):
        self.now = now
        self.local = local or now
        self.margin = margin
        self.guard = guard_ms
        self.timers = timers
        self.limits: list[_Limit] = []
        self.queues = _Queues()
        self.backoff_until = 0.0
        self.http_429 = 0
        self.http_418 = 0
        self._timer: asyncio.TimerHandle | None = None
        self.queues_started = False
        self.configure(rules)
        self.queues_started = True

    # --- configuration and status ---------------------------------------------------------------

    def configure(self, rules: Iterable[LimitRule]) -> None:
        """Use these limits from now on (counts of limits that stay are kept)."""
        old = {lim.rule.key: lim for lim in self.limits}
        fresh = []
        for rule in rules:
            if rule.interval not in INTERVAL_MS or rule.limit <= 0:
                continue
            lim = _Limit(rule, self.margin, self.guard)
            if rule.key in old:
                lim.counts = old[rule.key].counts
            fresh.append(lim)
        self.limits = fresh
        for waiter in self.queues:
            waiter.amounts = tuple(lim.amount(waiter.cost) for lim in self.limits)
        if self.queues_started:
            self._reevaluate(self.now())
            self.pump()

    def rules(self) -> list[LimitRule]:
        return [lim.rule for lim in self.limits]

    def status(self) -> LimiterStatus:
        """Usage of every limit in its current window, queue depths and any pause."""
        now = self.now()
        usage = []
        for lim in self.limits:
            w = lim.window(now)
            usage.append(LimitUsage(lim.rule, lim.used(w), (w + 1) * lim.span))
        queued = {p: len(self.queues.by_priority[p]) for p in Priority}
        backoff = self.backoff_until if self.backoff_until > now else None
        return LimiterStatus(usage, queued, backoff, self.http_429, self.http_418)

    # --- the public operations --------------------------------------------------------------------

    async def acquire(
        self, priority: Priority, cost: Cost, deadline: float | None = None, *, fair_share_key: str = ""
    ) -> Grant:
        """Wait for capacity by priority, then in turn by key; fail at once if ``deadline`` (local ms) cannot be met."""
        now = self.now()
        amounts = tuple(lim.amount(cost) for lim in self.limits)
        for lim, amount in zip(self.limits, amounts, strict=True):
            if amount > lim.capacity:
                raise ResourceExhausted(
                    f"request weight {amount} exceeds the {lim.rule.rate_limit_type} limit {lim.capacity}",
                    reason="RATE_LIMIT",
                )
        loop = asyncio.get_running_loop()
        waiter = _Waiter(priority, cost, amounts, deadline, loop.create_future(), fair_share_key)
        self.queues.add(waiter)
        projected, overtakes = self._project(now, waiter)
        if self._misses(waiter, projected, now):
            self.queues.remove(waiter)
            raise self._exhausted(now, projected)
        if overtakes:
            self._reevaluate(now)  # the waiters it went ahead of may now miss their deadlines
        self.pump()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            self.queues.remove(waiter)
            self.pump()
            raise

    def observe(self, headers: Mapping[str, str], grant: Grant | None) -> None:
        """Raise local counts to the exchange's usage headers (lowercase names) of an answer."""
        if grant is None:
            return
        now = self.now()
        changed = False
        for lim in self.limits:
            if lim.header is None:
                continue
            raw = headers.get(lim.header)
            if raw is None:
                continue
            try:
                value = int(raw)
            except ValueError:
                continue
            w = lim.window(grant.at)
            if w != lim.window(now):
                continue  # the count belongs to a window that has ended
            if value > lim.used(w):
                lim.counts[w] = value
                changed = True
        if changed:
            self._reevaluate(now)
            self.pump()

    def pause(self, seconds: float, *, status: int) -> float:
        """Stop all sending for ``seconds`` (429 Retry-After, or until a 418 ban ends); return the end (exchange ms)."""
        now = self.now()
        if status == 418:
            self.http_418 += 1
        elif status == 429:
            self.http_429 += 1
        self.backoff_until = max(self.backoff_until, now + max(0.0, seconds) * 1000.0)
        self._reevaluate(now)
        self.pump()
        return self.backoff_until

    def pump(self) -> None:
        """Let through every waiter that fits now, in priority order; schedule the next wake-up."""
        now = self.now()
        blocked: set[int] = set()
        if self.backoff_until <= now:
            for waiter in list(self.queues):
                if waiter.future.done():
                    self.queues.remove(waiter)
                    continue
                needed = [i for i, a in enumerate(waiter.amounts) if a]
                if any(i in blocked for i in needed):
                    continue
                lacking = [i for i in needed if self.limits[i].free(now) < waiter.amounts[i]]
                if lacking:
                    blocked.update(lacking)
                    continue
                self._charge(now, waiter.amounts)
                self.queues.serve(waiter)
                waiter.future.set_result(Grant(now))
        self._schedule(now, blocked)

    # --- internals ----------------------------------------------------------------------------------

    def _charge(self, now: float, amounts: tuple[int, ...]) -> None:
        for lim, amount in zip(self.limits, amounts, strict=True):
            if amount:
                lim.charge(now, amount)

    def _project(self, now: float, new: _Waiter) -> tuple[float, bool]:
        """When ``new`` (just queued) would be let through, and whether any waiter now goes after it."""
        demand = [0] * len(self.limits)
        order = iter(self.queues)
        for waiter in order:
            if waiter is new:
                break
            for i, a in enumerate(waiter.amounts):
                demand[i] += a
        overtakes = next(order, None) is not None
        return self._time_for(now, demand, new.amounts), overtakes

    def _time_for(self, now: float, demand: list[int], amounts: tuple[int, ...]) -> float:
        base = max(now, self.backoff_until)
        t = base
        for i, lim in enumerate(self.limits):
            if amounts[i]:
                t = max(t, lim.time_for(demand[i] + amounts[i], base))
        return t

    def _reevaluate(self, now: float) -> None:
        """Fail, at once, every waiter that can no longer be let through before its deadline.

        The waiters are taken in the order they are let through; when one fails, the next one of
        its key takes its turn, as it will in ``pump``.
        """
        demand = [0] * len(self.limits)
        for p in Priority:
            turn = [deque(fifo) for fifo in self.queues.by_priority[p].fifos.values()]
            while turn:
                still = []
                for fifo in turn:
                    while fifo:
                        if self._stays(fifo.popleft(), now, demand):
                            still.append(fifo)
                            break
                turn = [fifo for fifo in still if fifo]

    def _stays(self, waiter: _Waiter, now: float, demand: list[int]) -> bool:
        """Keep ``waiter`` queued behind ``demand`` (adding its own amounts), or fail it if it is too late."""
        if waiter.future.done():
            self.queues.remove(waiter)
            return False
        projected = self._time_for(now, demand, waiter.amounts)
        if self._misses(waiter, projected, now):
            self.queues.remove(waiter)
            waiter.future.set_exception(self._exhausted(now, projected))
            return False
        for i, a in enumerate(waiter.amounts):
            demand[i] += a
        return True

    def _misses(self, waiter: _Waiter, projected: float, now: float) -> bool:
        """Whether ``projected`` (exchange time) is past the waiter's deadline (local time)."""
        return waiter.deadline is not None and projected - (now - self.local()) > waiter.deadline

    def _exhausted(self, now: float, projected: float) -> ResourceExhausted:
        retry_after = max(0.0, (projected - now) / 1000.0) if math.isfinite(projected) else 3600.0
        return ResourceExhausted(
            f"Binance rate limit: cannot send before the deadline; capacity in about {retry_after:.1f}s",
            retry_after=retry_after,
            reason="RATE_LIMIT",
        )

    def _schedule(self, now: float, blocked: set[int]) -> None:
        if not self.timers:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not len(self.queues):
            return
        wake = math.inf
        if self.backoff_until > now:
            wake = self.backoff_until
        else:
            for i in blocked:
                wake = min(wake, self.limits[i].next_change(now))
        offset = now - self.local()
        for waiter in self.queues:
            if waiter.deadline is not None:
                wake = min(wake, waiter.deadline + offset)
        if not math.isfinite(wake):
            wake = now + 50.0
        # A little late rather than early: the loop's clock and the wall clock differ slightly.
        delay = max(0.001, (wake - now) / 1000.0 + 0.002)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = self.now()
        self._expire(now)
        self.pump()

    def _expire(self, now: float) -> None:
        local = self.local()
        for waiter in list(self.queues):
            if waiter.deadline is not None and waiter.deadline <= local and not waiter.future.done():
                self.queues.remove(waiter)
                waiter.future.set_exception(self._exhausted(now, now))
        self._reevaluate(now)

    def tick(self) -> None:
        """Expire and pump now (tests that drive the clock by hand call this)."""
        now = self.now()
        self._expire(now)
        self.pump()

    def close(self) -> None:
        """Cancel the timer and fail every waiter (the service is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in list(self.queues):
            self.queues.remove(waiter)
            if not waiter.future.done():
                waiter.future.set_exception(ResourceExhausted("the gateway is stopping", reason="STOPPING"))
