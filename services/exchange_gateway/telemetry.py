"""The gateway's gauges, read at every scrape, and the checks behind its readiness.

Gauges (``GatewayStateCollector``), from the gateway's memory, no request to the exchange:
- ``trading_exchange_limit_used{limit, interval}`` and ``trading_exchange_limit{limit, interval}``:
  request weight, orders and raw requests counted in the current window of each exchangeInfo rate
  limit, and the limit itself (``limit`` REQUEST_WEIGHT, ORDERS, RAW_REQUESTS; ``interval`` 1m, 10s, 1d);
- ``trading_exchange_queue_depth{priority}``: requests waiting for rate-limit capacity;
- ``trading_exchange_backoff_seconds``: time left of a 429 / 418 pause (all sending stopped);
- ``trading_exchange_rate_limited_total{status}``: 429 and 418 answers received;
- ``trading_exchange_ws_connected`` and ``trading_exchange_ws_reconnects_total``: the user data stream;
- ``trading_exchange_unknown_outcomes`` and ``trading_exchange_unknown_outcome_oldest_seconds``:
  journaled orders whose outcome is unknown (sent, no definite answer) and no longer in flight;
- ``trading_gateway_events_total{event}``: the order use cases' own counters (resolved, rejected,
  proven_not_placed, exchange_forgot_order, anomaly_*, stream_gaps, reconciliations...).

Readiness (``readiness_checks``): the gateway can do its job unless the exchange has it paused
(429 / 418), the exchange does not answer, or the user data stream has been down longer than
``STREAM_GRACE_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.exchange_gateway.adapters.binance.rate_limiter import RateLimiter
from services.exchange_gateway.adapters.binance.rest import BinanceRestClient
from services.exchange_gateway.adapters.binance.telemetry import ExchangeTelemetry
from services.exchange_gateway.adapters.binance.user_stream import UserDataStream
from services.exchange_gateway.domain.model import OrderStatus
from services.exchange_gateway.service.orders import Orders
from shared.readiness import Check

STREAM_GRACE_S = 15.0
"""How long the user data stream may be down (reconnecting) before the gateway reports NOT_SERVING."""
PROBE_EVERY_S = 5.0
"""While the exchange's last answer is missing, readiness asks ``GET /api/v3/time`` (weight 1) this often."""

_LETTER = {"SECOND": "s", "MINUTE": "m", "HOUR": "h", "DAY": "d"}


class GatewayStateCollector(Collector):
    """Gauges of the rate limiter, the user data stream, the journal's unknown outcomes, the use cases' counters."""

    def __init__(
        self,
        limiter: RateLimiter,
        stream: UserDataStream,
        journal: Any,
        orders: Orders,
        clock: Callable[[], float] = time.time,
    ):
        self.limiter = limiter
        self.stream = stream
        self.journal = journal
        self.orders = orders
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from self._rate_limits()
        yield from self._user_stream()
        yield from self._unknown_outcomes()
        events = CounterMetricFamily(
            "trading_gateway_events", "The order use cases' counters, by event.", labels=["event"]
        )
        for name, value in sorted(dict(self.orders.stats).items()):
            events.add_metric([name], value)
        yield events

    def _rate_limits(self) -> Iterator[Metric]:
        """Each exchange rate limit's use, the queue waiting for capacity, a 429/418 pause and their count."""
        status = self.limiter.status()
        used = GaugeMetricFamily(
            "trading_exchange_limit_used",
            "Units counted in the current window of an exchange rate limit (weight, orders, raw requests).",
            labels=["limit", "interval"],
        )
        limit = GaugeMetricFamily(
            "trading_exchange_limit", "An exchange rate limit, from exchangeInfo.", labels=["limit", "interval"]
        )
        for usage in status.limits:
            rule = usage.rule
            labels = [rule.rate_limit_type, f"{rule.interval_num}{_LETTER.get(rule.interval, '?')}"]
            used.add_metric(labels, usage.used)
            limit.add_metric(labels, rule.limit)
        yield used
        yield limit
        queued = GaugeMetricFamily(
            "trading_exchange_queue_depth", "Requests waiting for rate-limit capacity.", labels=["priority"]
        )
        for priority, depth in status.queued.items():
            queued.add_metric([priority.name], depth)
        yield queued
        backoff = GaugeMetricFamily(
            "trading_exchange_backoff_seconds",
            "Seconds left of the pause a 429 (Retry-After) or 418 (ban) imposed on all sending; 0 when none.",
        )
        left_ms = (status.backoff_until_ms - self.limiter.now()) if status.backoff_until_ms else 0.0
        backoff.add_metric([], max(0.0, left_ms / 1000.0))
        yield backoff
        limited = CounterMetricFamily(
            "trading_exchange_rate_limited",
            "Answers that told the gateway to stop sending: 429 (Retry-After) and 418 (IP banned).",
            labels=["status"],
        )
        limited.add_metric(["429"], status.http_429)
        limited.add_metric(["418"], status.http_418)
        yield limited

    def _user_stream(self) -> Iterator[Metric]:
        """Whether the user data stream is subscribed, and its resubscriptions."""
        connected = GaugeMetricFamily(
            "trading_exchange_ws_connected", "1 while the user data stream (WebSocket API) is subscribed."
        )
        connected.add_metric([], 1 if self.stream.connected.is_set() else 0)
        yield connected
        reconnects = CounterMetricFamily(
            "trading_exchange_ws_reconnects", "Subscriptions of the user data stream after the first one."
        )
        reconnects.add_metric([], max(0, self.stream.connects - 1))
        yield reconnects

    def _unknown_outcomes(self) -> Iterator[Metric]:
        """Orders of unknown outcome still being resolved, and the oldest one's age."""
        unknown = [
            order
            for cid, order in list(self.journal.cache.items())
            if order.status is OrderStatus.UNKNOWN and not self.orders.in_flight(cid)
        ]
        count = GaugeMetricFamily(
            "trading_exchange_unknown_outcomes",
            "Orders sent to the exchange whose outcome is unknown (timeout, 5xx) and still being resolved.",
        )
        count.add_metric([], len(unknown))
        yield count
        oldest = GaugeMetricFamily(
            "trading_exchange_unknown_outcome_oldest_seconds",
            "Age of the oldest order of unknown outcome (since it was journaled); 0 when none.",
        )
        now_ms = self.clock() * 1000.0
        oldest.add_metric([], max(0.0, (now_ms - min(o.create_time_ms for o in unknown)) / 1000.0) if unknown else 0.0)
        yield oldest


def readiness_checks(
    limiter: RateLimiter,
    exchange: ExchangeTelemetry,
    rest: BinanceRestClient,
    stream: UserDataStream,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Check]:
    """The gateway's readiness checks: not paused by the exchange, the exchange answering, the stream up."""

    async def not_rate_limited() -> str | None:
        left_ms = limiter.backoff_until - limiter.now()
        if left_ms > 0:
            return f"the exchange stopped our requests (429 or 418) for {left_ms / 1000.0:.0f} s more"
        return None

    last_probe = [float("-inf")]

    async def exchange_answers() -> str | None:
        if exchange.answering():
            return None
        if limiter.backoff_until > limiter.now():
            return "no answer from the exchange (not asked again while paused)"
        now = clock()
        if now - last_probe[0] >= PROBE_EVERY_S:
            last_probe[0] = now
            try:
                await asyncio.wait_for(rest.server_time(), timeout=2.0)
            except Exception:
                return "no answer from the exchange"
        return None if exchange.answering() else "no answer from the exchange"

    down_since: list[float | None] = [None]

    async def user_stream_up() -> str | None:
        if stream.connected.is_set():
            down_since[0] = None
            return None
        now = clock()
        since = down_since[0]
        if since is None:
            since = down_since[0] = now
        down = now - since
        if down > STREAM_GRACE_S:
            return f"the user data stream has been down for {down:.0f} s"
        return None

    return {
        "exchange_not_rate_limited": not_rate_limited,
        "exchange_answers": exchange_answers,
        "user_data_stream": user_stream_up,
    }
