"""Every HTTP request to the exchange, measured and traced at the transport.

- ``trading_exchange_requests_total{endpoint, code}``: ``endpoint`` is the method and path
  (``POST /api/v3/order``; the paths are the client's own), ``code`` the HTTP status (so 429, 418
  and 5xx show as such) or ``no_answer`` when the request got none (could not connect, timed out,
  dropped).
- ``trading_exchange_request_seconds{endpoint}``: time to the answer (or to giving up).
- A CLIENT span per request (``HTTP POST``) with the method, the path, the server's host and port and
  the status: never the query string (it carries the signature), the headers (the API key) or the body.

It also remembers whether the exchange answered the latest request, which the gateway's readiness
uses ("cannot reach the exchange").
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from opentelemetry import trace
from prometheus_client import CollectorRegistry, Counter, Histogram
from yarl import URL

from shared.tracing import SpanKind, error_status

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
NO_ANSWER = "no_answer"


class RequestRecord:
    """What became of one request: its HTTP status, or none."""

    __slots__ = ("status",)

    def __init__(self) -> None:
        self.status: int | None = None


class ExchangeTelemetry:
    """Metrics, spans and reachability of the exchange's HTTP API."""

    def __init__(self, registry: CollectorRegistry, tracer: trace.Tracer, clock: Callable[[], float] = time.monotonic):
        self.tracer = tracer
        self.clock = clock
        self.requests = Counter(
            "trading_exchange_requests_total",
            "HTTP requests to the exchange by endpoint and answer (HTTP status, or no_answer).",
            ["endpoint", "code"],
            registry=registry,
        )
        self.seconds = Histogram(
            "trading_exchange_request_seconds",
            "Time from sending an HTTP request to the exchange to its answer (or to giving up).",
            ["endpoint"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.no_answer_since: float | None = None
        """Monotonic time of the first of the latest requests that got no answer; None once one is answered."""

    @contextlib.contextmanager
    def request(self, method: str, url: str) -> Iterator[RequestRecord]:
        """Measure and trace one request (the caller sets ``record.status`` when an answer comes)."""
        target = URL(url, encoded=True)
        endpoint = f"{method} {target.path}"
        record = RequestRecord()
        span = self.tracer.start_span(
            f"HTTP {method}",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": method,
                "url.path": target.path,
                "server.address": target.host or "",
                "server.port": target.port or 0,
            },
        )
        started = time.perf_counter()
        try:
            with trace.use_span(span, end_on_exit=False):
                yield record
        finally:
            elapsed = time.perf_counter() - started
            status = record.status
            code = NO_ANSWER if status is None else str(status)
            self.requests.labels(endpoint, code).inc()
            self.seconds.labels(endpoint).observe(elapsed)
            if status is None:
                if self.no_answer_since is None:
                    self.no_answer_since = self.clock()
                if span.is_recording():
                    span.set_status(error_status(NO_ANSWER))
            else:
                self.no_answer_since = None
                if span.is_recording():
                    span.set_attribute("http.response.status_code", status)
                    if status >= 400:
                        span.set_status(error_status(str(status)))
            span.end()

    def answering(self) -> bool:
        """Whether the latest request to the exchange got an answer (any HTTP status)."""
        return self.no_answer_since is None
