"""The order use cases, as one entry point for the API, the streams and the upkeep.

Each part reads alone and shares only an ``OrderContext`` (journal, exchange, clock, counters,
background tasks) with the others:
- ``placement``: SubmitOrder, journaled before it is sent and sent at most once;
- ``cancellation``: CancelOrder, and the cancels owed once an order shows up open;
- ``resolution``: GetOrder, journaling the exchange's snapshots, syncs and unknown outcomes;
- ``reconciliation``: every order that is not final against the exchange's open orders;
- ``intake``: the user data stream's reports and the journal's anomalies.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from services.exchange_gateway.domain.model import Anomaly, Order, OrderRequest
from services.exchange_gateway.service.cancellation import Cancellation
from services.exchange_gateway.service.foreign import ForeignOrders
from services.exchange_gateway.service.intake import EventIntake
from services.exchange_gateway.service.market import Market
from services.exchange_gateway.service.order_tasks import OrderContext
from services.exchange_gateway.service.placement import Placement
from services.exchange_gateway.service.ports import EventSource, Exchange, Journal
from services.exchange_gateway.service.reconciliation import Reconciliation
from services.exchange_gateway.service.resolution import Resolution
from shared.timeutil import now_ms as wall_ms


class Orders:
    """The order use cases over the Exchange and Journal ports, built from their parts."""

    def __init__(
        self,
        journal: Journal,
        exchange: Exchange,
        market: Market,
        events: EventSource,
        *,
        resolve_first_delay_s: float = 0.2,
        resolve_max_delay_s: float = 5.0,
        not_placed_margin_ms: int = 1000,
        cancel_foreign: bool = False,
        clock: Callable[[], int] = wall_ms,
        record_delay_s: float = 0.005,
    ):
        self.journal = journal
        self.ctx = OrderContext(journal, exchange, clock)
        self.resolution = Resolution(
            self.ctx,
            resolve_first_delay_s=resolve_first_delay_s,
            resolve_max_delay_s=resolve_max_delay_s,
            not_placed_margin_ms=not_placed_margin_ms,
        )
        self.cancellation = Cancellation(self.ctx, self.resolution)
        # A sync may find a cancel owed, and a cancel may need a sync: the two call each other.
        self.resolution.follow_up = self.cancellation
        self.placement = Placement(self.ctx, market, self.resolution, record_delay_s=record_delay_s)
        self.foreign = ForeignOrders(journal, exchange, cancel=cancel_foreign, spawn=self.spawn, clock=clock)
        self.reconciliation = Reconciliation(self.ctx, self.resolution, self.cancellation, self.foreign)
        self.intake = EventIntake(self.ctx, events, self.resolution)

    @property
    def stats(self) -> Counter[str]:
        """Counters by event (unknown_outcome, rejected, resolved, ...), exported as metrics."""
        return self.ctx.stats

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference and logging a failure."""
        return self.ctx.tasks.spawn(coro, name)

    def in_flight(self, client_order_id: str) -> bool:
        """Whether a submission of this order is running in this process (its outcome is not known yet)."""
        return self.ctx.tasks.in_flight(client_order_id)

    async def close(self, grace: float = 1.0) -> None:
        """Let requests already sent finish (up to ``grace`` seconds), then cancel the rest."""
        self.foreign.closed = True
        await self.ctx.tasks.close(grace)

    async def submit(self, request: OrderRequest, *, remaining_s: float | None, fair_share_key: str = "") -> Order:
        """Place an order once per client_order_id, in turn with other keys' orders."""
        return await self.placement.submit(request, remaining_s=remaining_s, fair_share_key=fair_share_key)

    async def cancel(self, client_order_id: str, *, remaining_s: float | None) -> Order:
        """Cancel an order; an order already final is returned as it is."""
        return await self.cancellation.cancel(client_order_id, remaining_s=remaining_s)

    async def get(self, client_order_id: str, *, refresh: bool, remaining_s: float | None) -> Order:
        """The journaled order, or (refresh) the exchange's view of it, journaled first."""
        return await self.resolution.get(client_order_id, refresh=refresh, remaining_s=remaining_s)

    async def reconcile(self, why: str) -> None:
        """Bring every order that is not final in line with the exchange, and find foreign orders."""
        await self.reconciliation.reconcile(why)

    def on_event(self, raw: dict[str, Any]) -> None:
        """Journal one user data stream event (queued in arrival order; never blocks the reader)."""
        self.intake.on_event(raw)

    def anomalies_found(self, anomalies: list[Anomaly]) -> None:
        """Journal callback after a commit: each new anomaly is a security event."""
        self.intake.anomalies_found(anomalies)
