"""What an operator watches of the order service, as Prometheus metrics (``trading_`` prefix).

Counted where they happen (after the transaction that made them committed):
- ``trading_orders_placed_total{type, side}``: PlaceOrder calls that created an order and sent it
  to the gateway (whatever the exchange then said);
- ``trading_orders_ended_total{status}``: orders that reached a final status (FILLED, CANCELLED,
  REJECTED, EXPIRED), counted once each;
- ``trading_fills_total``: trades applied to orders (each trade once);
- ``trading_order_anomalies_total``: events that contradict what an order already is (a move the
  state table refuses, a trade after the order ended, an overfill), each also logged at ERROR as
  "order anomaly" with the order id and what happened;
- ``trading_order_submit_seconds``: from the order's INSERT to the gateway's answer to SubmitOrder
  (the exchange's answer, or "outcome unknown");
- ``trading_execution_lag_seconds``: from the exchange's trade time to the trade booked in the ledger
  (the user service's SettleTrade done).

Read from the service's state at every scrape (``OrderStateCollector``): the outbox's backlog and the
age of its oldest entry, the parked effects, and the last client-money reconciliation report's
difference per asset (assets the exchange lists only, so the label stays bounded).

Label values come from the code's enums, never from user input.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.order_service.domain.model import Order, OrderType, Side
from services.order_service.domain.states import FINAL_STATES

if TYPE_CHECKING:
    from services.order_service.service.outbox import Outbox

SUBMIT_BUCKETS = (0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LAG_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class OrderTelemetry:
    """The order service's own counters and histograms (on ``registry``; a private one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        registry = registry if registry is not None else CollectorRegistry()
        self.registry = registry
        self.placed = Counter(
            "trading_orders_placed_total",
            "Orders created by PlaceOrder and sent to the gateway, by the order's type and side.",
            ["type", "side"],
            registry=registry,
        )
        self.ended = Counter(
            "trading_orders_ended_total",
            "Orders that reached a final status, by that status (each order once).",
            ["status"],
            registry=registry,
        )
        self.fills = Counter("trading_fills_total", "Trades applied to orders (each once).", registry=registry)
        self.anomalies = Counter(
            "trading_order_anomalies_total",
            "Events that contradict an order's state (a refused state move, a late trade, an overfill).",
            registry=registry,
        )
        self.submit_seconds = Histogram(
            "trading_order_submit_seconds",
            "Time from an order's INSERT to the gateway's answer to SubmitOrder (the exchange's answer).",
            buckets=SUBMIT_BUCKETS,
            registry=registry,
        )
        self.execution_lag = Histogram(
            "trading_execution_lag_seconds",
            "Time from the exchange's trade time to the trade booked in the ledger (SettleTrade done).",
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        for order_type in OrderType:
            for side in Side:
                self.placed.labels(order_type.value, side.value)
        for state in FINAL_STATES:
            self.ended.labels(state.value)

    def order_placed(self, order: Order) -> None:
        """An order was created and sent to the gateway."""
        self.placed.labels(order.type.value, order.side.value).inc()

    def submit_answered(self, seconds: float) -> None:
        """The gateway answered an order's submission ``seconds`` after its INSERT."""
        self.submit_seconds.observe(seconds)

    def committed(self, ended: Iterable[Order], fills: int, anomalies: int = 0) -> None:
        """A transaction committed: these orders ended, this many trades were applied, this many anomalies found."""
        for order in ended:
            self.ended.labels(order.state.value).inc()
        if fills:
            self.fills.inc(fills)
        if anomalies:
            self.anomalies.inc(anomalies)

    def settled(self, trade_time_ms: int, now_ms: int) -> None:
        """A trade made at ``trade_time_ms`` (the exchange's clock) is booked in the ledger now."""
        if trade_time_ms > 0:
            self.execution_lag.observe(max(0.0, (now_ms - trade_time_ms) / 1000.0))


class OrderStateCollector(Collector):
    """Gauges read at scrape time from the outbox and the last reconciliation report."""

    def __init__(
        self,
        outbox: Outbox,
        reconciliation: object,
        listed_assets: Callable[[], set[str]],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.outbox = outbox
        self.reconciliation = reconciliation
        self.listed_assets = listed_assets
        self.clock = clock

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        outbox = self.outbox
        backlog = GaugeMetricFamily(
            "trading_outbox_backlog",
            "Effects (SettleTrade, ReleaseFunds) written to the outbox and not yet performed, parked ones included.",
        )
        backlog.add_metric([], outbox.pending())
        yield backlog
        oldest = GaugeMetricFamily(
            "trading_outbox_oldest_seconds",
            "Age of the oldest effect waiting in the outbox (since this process queued it); 0 when empty.",
        )
        oldest.add_metric([], outbox.oldest_age(self.clock()))
        yield oldest
        parked = GaugeMetricFamily(
            "trading_parked_effects",
            "Effects parked after failing for a definite reason: each waits for an operator (RetryParkedEffect).",
        )
        parked.add_metric([], outbox.parked_count())
        yield parked
        report = getattr(self.reconciliation, "last", None)
        difference = GaugeMetricFamily(
            "trading_reconciliation_difference",
            "Last client-money reconciliation, per asset: exchange total - (users + house + in flight). "
            "Below 0 is a shortfall.",
            labels=["asset"],
        )
        when = GaugeMetricFamily(
            "trading_reconciliation_report_timestamp_seconds",
            "Unix time of the last client-money reconciliation report (0: none yet).",
        )
        if report is not None:
            listed = self.listed_assets()
            for line in report.assets:
                if line.asset in listed:
                    difference.add_metric([line.asset], float(line.difference))
            when.add_metric([], report.report_ms / 1000.0)
        else:
            when.add_metric([], 0.0)
        yield difference
        yield when
