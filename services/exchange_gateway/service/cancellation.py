"""CancelOrder, and the cancels the gateway owes: an order whose cancel's outcome is not known yet,
or that was cancelled while its own outcome was unknown, is cancelled once a sync finds it open."""

from __future__ import annotations

import asyncio
from typing import Any

from services.exchange_gateway.domain.errors import ExchangeError, ExchangeOutcome, Failure
from services.exchange_gateway.domain.model import OPEN_STATUSES, Order, OrderStatus
from services.exchange_gateway.domain.validation import check_client_order_id
from services.exchange_gateway.service import recording
from services.exchange_gateway.service.order_tasks import OrderContext
from services.exchange_gateway.service.ports import RequestKind
from services.exchange_gateway.service.resolution import Resolution
from shared.errors import NotFound, Unavailable


class Cancellation:
    """Cancels orders at the exchange and journals the answer, now or (when owed) in the background."""

    def __init__(self, ctx: OrderContext, resolution: Resolution):
        self.ctx = ctx
        self.resolution = resolution
        self._running: set[str] = set()
        self._wanted: set[str] = set()
        """Orders whose cancel may or may not have happened: cancelled again if a sync finds them open."""

    async def cancel(self, client_order_id: str, *, remaining_s: float | None) -> Order:
        """Cancel an order; an order already final is returned as it is."""
        ctx = self.ctx
        cid = check_client_order_id(client_order_id)
        placing = ctx.tasks.placing.get(cid)
        if placing is not None:
            # Its placement was answered and is still being journaled (a few milliseconds): cancel
            # what the journal will hold, not the order as it was before it was sent.
            ctx.journal.hurry()
            await asyncio.wait([placing], timeout=remaining_s)
        order = await ctx.journal.get_order(cid)
        if order is None:
            raise NotFound(f"no order with client_order_id {cid!r}", reason="ORDER_NOT_FOUND")
        if order.is_final:
            return order
        deadline = ctx.exchange.deadline_after(remaining_s)
        ticket = await ctx.exchange.admit(RequestKind.CANCEL, deadline)
        task: asyncio.Task[Order] = ctx.tasks.spawn(self._cancel(cid, ticket, deadline), name=f"cancel-{cid}")
        return await asyncio.shield(task)

    async def _cancel(self, cid: str, ticket: Any, deadline: float | None) -> Order:
        ctx, resolution = self.ctx, self.resolution
        order = await ctx.journal.get_order(cid)
        if order is not None and order.status is OrderStatus.UNKNOWN:
            # Remember the intent durably: the resolver cancels the order once it shows up, also
            # after a restart. An order known to be open needs no such note: the exchange's answer
            # (or a query) tells whether it was cancelled, and the caller retries otherwise.
            order = await ctx.journal.transact(lambda tx: recording.request_cancel(tx, cid, ctx.clock()))
            resolution.resolve_later(cid)
        if order is None:
            raise NotFound(f"no order with client_order_id {cid!r}", reason="ORDER_NOT_FOUND")
        if order.is_final:
            return order
        try:
            snap = await ctx.exchange.cancel_order(
                order.symbol, cid, order.exchange_order_id, ticket=ticket, deadline=deadline
            )
        except ExchangeError as err:
            if err.failure in (Failure.CANCEL_REJECTED, Failure.NO_SUCH_ORDER):
                if order.status is OrderStatus.UNKNOWN:
                    return await resolution.current(cid, order)
                # Not open at the exchange: it filled, expired or was canceled; learn which.
                try:
                    return (await resolution.sync(cid)).order or order
                except ExchangeError:
                    resolution.request_sync(cid, delay=0.5)
                    return await resolution.current(cid, order)
            if err.outcome is not ExchangeOutcome.DEFINITE or err.failure is Failure.RATE_LIMITED:
                # May or may not have happened: the sync finds out and cancels again if needed.
                self._wanted.add(cid)
                resolution.request_sync(cid, delay=0.5)
                return await resolution.current(cid, order)
            raise Unavailable(f"the exchange refused the cancel: {err.describe()}", reason="CANCEL_FAILED")
        return await resolution.apply(cid, snap)

    def cancel_soon(self, cid: str) -> None:
        """Cancel the order in the background (one cancel at a time per order)."""
        if cid in self._running or self.ctx.tasks.closed:
            return
        self._running.add(cid)

        async def run() -> None:
            try:
                ticket = await self.ctx.exchange.admit(RequestKind.CANCEL, None)
                await self._cancel(cid, ticket, None)
            finally:
                self._running.discard(cid)

        self.ctx.tasks.spawn(run(), name=f"cancel-bg-{cid}")

    def after_sync(self, cid: str, order: Order) -> None:
        """A sync found ``order`` so: cancel it if a cancel is owed and it is open; forget the debt once final."""
        if (order.cancel_requested or cid in self._wanted) and order.status in OPEN_STATUSES:
            self.cancel_soon(cid)
        elif order.is_final:
            self._wanted.discard(cid)
