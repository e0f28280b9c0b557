"""Event intake: the user data stream's reports and the journal's anomalies, as they arrive."""

from __future__ import annotations

import logging
from typing import Any

from services.exchange_gateway.domain.model import Anomaly, ExchangeEvent
from services.exchange_gateway.service import recording
from services.exchange_gateway.service.order_tasks import OrderContext
from services.exchange_gateway.service.ports import EventSource
from services.exchange_gateway.service.resolution import Resolution
from shared.logs import security_log

log = logging.getLogger("exchange_gateway.orders")


class EventIntake:
    """Journals the user data stream's execution reports; a gap in them becomes a sync."""

    def __init__(self, ctx: OrderContext, events: EventSource, resolution: Resolution):
        self.ctx = ctx
        self.events = events
        self.resolution = resolution

    def on_event(self, raw: dict[str, Any]) -> None:
        """Journal one user data stream event (queued in arrival order; never blocks the reader)."""
        event = self.events(raw)
        if event is None:
            return
        if self._known(event) is not None:
            return  # the order's response (or a reconciliation) already journaled it
        now = self.ctx.clock()
        # The order's answer is usually being journaled right now (the exchange sends both at once):
        # the check runs again once that has committed, so the report costs no transaction of its own.
        future = self.ctx.journal.submit(
            lambda tx: recording.apply_event(tx, event, now_ms=now), settled=lambda: self._known(event)
        )

        def done(f: Any) -> None:
            if f.cancelled():
                return
            if f.exception() is not None:
                log.error("journaling an execution failed", exc_info=f.exception())
                self.resolution.request_sync(event.client_order_id, delay=0.5)
                return
            applied: recording.Applied = f.result()
            if applied.order is None:
                return  # an order the gateway did not place: its foreign-order record was updated
            if not applied.complete:
                self.ctx.stats["stream_gaps"] += 1
                self.resolution.request_sync(event.client_order_id)

        future.add_done_callback(done)

    def _known(self, event: ExchangeEvent) -> recording.Applied | None:
        """``event`` is already journaled (checked against the committed cache): nothing to write."""
        journal = self.ctx.journal
        cached = journal.cached_order(event.client_order_id)
        if cached is not None and recording.already_known(cached, event, journal.journaled_trade):
            return recording.Applied(cached)
        return None

    def anomalies_found(self, anomalies: list[Anomaly]) -> None:
        """Journal callback after a commit: each new anomaly is a security event."""
        for anomaly in anomalies:
            self.ctx.stats[f"anomaly_{anomaly.kind.value.lower()}"] += 1
            security_log.error(
                "exchange report contradicts the journal",
                extra={
                    "kind": anomaly.kind.value,
                    "symbol": anomaly.symbol,
                    "client_order_id": anomaly.client_order_id,
                    "trade_id": anomaly.trade_id,
                    "detail": anomaly.detail,
                },
            )
