"""Bringing every order that is not final in line with the exchange, and finding foreign orders.

Reconciliation also catches an exchange that forgot: an order it had accepted, that the journal
has open and that it answers "Order does not exist" for, is an EXCHANGE_FORGOT_ORDER anomaly and
is ended as EXPIRED, so that the consumer releases what it holds for it.
"""

from __future__ import annotations

import asyncio
import logging

from services.exchange_gateway.domain.errors import ExchangeError
from services.exchange_gateway.domain.model import Order, OrderSnapshot, OrderStatus
from services.exchange_gateway.service import recording
from services.exchange_gateway.service.cancellation import Cancellation
from services.exchange_gateway.service.foreign import ForeignOrders
from services.exchange_gateway.service.order_tasks import OrderContext
from services.exchange_gateway.service.resolution import Resolution
from shared.errors import DomainError

log = logging.getLogger("exchange_gateway.orders")


class Reconciliation:
    """Compares the journal's open orders with the exchange's, one reconciliation at a time."""

    def __init__(self, ctx: OrderContext, resolution: Resolution, cancellation: Cancellation, foreign: ForeignOrders):
        self.ctx = ctx
        self.resolution = resolution
        self.cancellation = cancellation
        self.foreign = foreign
        self._lock = asyncio.Lock()

    async def _ours_and_foreign(
        self, listed: list[OrderSnapshot]
    ) -> tuple[dict[str, OrderSnapshot], list[OrderSnapshot]]:
        """The exchange's open orders split into the journal's (by client order id) and foreign ones."""
        journal = self.ctx.journal
        ours: dict[str, OrderSnapshot] = {}
        foreign: list[OrderSnapshot] = []
        for snap in listed:
            cid = snap.client_order_id
            mine = journal.cached_order(cid) or await journal.get_order(cid)
            if mine is not None and recording.belongs(mine, snap.symbol, snap.exchange_order_id):
                ours[cid] = snap
            else:
                foreign.append(snap)
        return ours, foreign

    async def _reconcile_order(self, stale: Order, open_snap: OrderSnapshot | None) -> None:
        """One journal order that is not final against the exchange's open order (None: not listed open)."""
        resolution = self.resolution
        cid = stale.client_order_id
        order = await self.ctx.journal.get_order(cid) or stale
        if order.is_final:
            return
        try:
            if open_snap is not None:
                if (
                    order.status is OrderStatus.UNKNOWN
                    or not order.reported_new
                    or open_snap.executed_qty > order.executed_qty
                ):
                    order = await resolution.apply(cid, open_snap)
                if order.cancel_requested:
                    self.cancellation.cancel_soon(cid)
            elif order.status is OrderStatus.UNKNOWN:
                resolution.resolve_later(cid)
            else:
                await resolution.sync(cid, missing_from_open=True)
        except (ExchangeError, DomainError) as exc:
            log.warning("reconcile: order sync failed", extra={"client_order_id": cid, "error": str(exc)})
            resolution.request_sync(cid, delay=1.0)

    async def reconcile(self, why: str) -> None:
        """Bring every order that is not final in line with the exchange, and find foreign orders.

        One GET openOrders for every symbol (weight 80), at every reconciliation, whatever the
        journal holds. Journal orders it lists are compared with it (their missing trades fetched
        with myTrades); journal orders it does not list are queried one by one (weight 4), and an
        accepted one that the exchange says does not exist is ended as forgotten; orders of
        unknown outcome go to the resolver. Every other order it lists is foreign.
        """
        ctx = self.ctx
        async with self._lock:
            ctx.stats["reconciliations"] += 1
            pending = await ctx.journal.orders_not_final()
            try:
                listed = await ctx.exchange.open_orders()
            except (ExchangeError, DomainError) as exc:
                log.warning("reconcile: open orders failed", extra={"why": why, "error": str(exc)})
                for stale in pending:
                    if not ctx.tasks.in_flight(stale.client_order_id):
                        self.resolution.request_sync(stale.client_order_id, delay=1.0)
                return
            ours, foreign = await self._ours_and_foreign(listed)
            if pending:
                log.info("reconciling", extra={"why": why, "orders": len(pending)})
            forgot_before = ctx.stats["exchange_forgot_order"]
            for stale in pending:
                if not ctx.tasks.in_flight(stale.client_order_id):
                    await self._reconcile_order(stale, ours.get(stale.client_order_id))
            forgotten = ctx.stats["exchange_forgot_order"] - forgot_before
            if forgotten:
                log.error(
                    "the exchange does not know orders it had accepted and the journal had open (was it reset?); "
                    "they are ended as EXPIRED with reason EXCHANGE_FORGOT and listed by ListAnomalies",
                    extra={"why": why, "orders": forgotten},
                )
            try:
                await self.foreign.reconcile(foreign)
            except (ExchangeError, DomainError) as exc:
                log.warning("reconcile: foreign orders not brought up to date", extra={"error": str(exc)})
