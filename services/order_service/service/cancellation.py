"""CancelOrder, and the cancel that the expiry scheduler sends when an order's expire_time passes.

The cancel request is persisted first (``cancel_requested``), then sent through the gateway. If
the gateway's answer says CANCELED and every trade it reports is already applied here, the order
ends now (CANCELLED, or EXPIRED for our own expiry) and its funds are released before we answer;
otherwise the end arrives through the execution stream. Trades that race the cancel still apply.

The answer is truthful: CANCELLED when the exchange confirmed, otherwise the order with
``cancel_requested`` set, which means the cancel IS pending: when the call failed without a definite
answer (gateway down, timeout, an order the exchange does not know yet), the reconciler sends it
again until the exchange answers, also after a restart, and never submits an order whose cancel
was requested. Only a definite refusal (rate limit, not cancellable) clears the request and is
returned as an error.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from services.order_service.domain.lifecycle import apply_exchange_order, cancel_refused, request_cancel
from services.order_service.domain.model import Caller, Order, Outcome
from services.order_service.domain.placement import check_symbol
from services.order_service.domain.states import ACTIVE_STATES, State
from services.order_service.service.core import Core
from services.order_service.service.deadline import Deadline
from services.order_service.service.ports import GatewayPort
from shared.errors import (
    OUTCOME_UNKNOWN,
    DomainError,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

log = logging.getLogger("order_service.cancel")


def not_found(order_id: str) -> NotFound:
    """The one answer for an order that does not exist or belongs to someone else."""
    return NotFound(f"order {order_id} not found", reason="ORDER_NOT_FOUND", metadata={"order_id": order_id})


async def send_cancel(core: Core, gateway: GatewayPort, order_id: str, timeout: float, drain_timeout: float) -> Order:
    """Cancel at the gateway and apply its answer; return the order as it then is."""
    try:
        answer = await gateway.cancel_order(order_id, timeout)
    except OUTCOME_UNKNOWN as exc:
        log.warning("cancel outcome unknown", extra={"order_id": order_id, "error": str(exc)})
        order = await core.store.get_order(order_id)
        if order is None:  # pragma: no cover - orders that reached the gateway are never deleted
            raise not_found(order_id) from None
        return order

    # A non-final answer means the outcome is not known yet (the gateway's contract): the request
    # stays pending and the stream reports the end.
    outcome = await core.mutate(order_id, lambda o: apply_exchange_order(o, answer, core.clock()))
    if outcome.effects:
        await core.outbox.drain(order_id, drain_timeout)
    return outcome.order


class CancelOrder:
    """The CancelOrder use case."""

    def __init__(self, core: Core, gateway: GatewayPort, *, timeout: float = 5.0, drain_timeout: float = 2.0):
        self.core = core
        self.gateway = gateway
        self.timeout = timeout
        self.drain_timeout = drain_timeout

    async def __call__(self, caller: Caller, order_id: str, deadline: Deadline) -> Order:
        """Cancel one of the caller's PENDING or PARTIALLY_FILLED orders."""
        order = await self.core.store.get_order(order_id)
        if order is None or order.user_id != caller.user_id:
            raise not_found(order_id)
        if order.state is State.PLACING:
            placing = self.core.placing.get(order_id)
            if placing is not None:
                self.core.store.hurry()  # its answer may be waiting to be recorded
                await asyncio.wait([placing], timeout=deadline.left(self.timeout))
            order = await self.core.store.get_order(order_id)
            if order is None:
                raise not_found(order_id)
            if order.state is State.PLACING and order_id in self.core.placing:
                raise Unavailable(
                    f"order {order_id} is still being placed; retry the cancel in a moment",
                    reason="ORDER_BEING_PLACED",
                    metadata={"order_id": order_id},
                )
        # Durable first: from here on the cancel is sent again after any failure or restart (recovery)
        # until the exchange answers definitively, and the order is never submitted again.
        order = (await self.core.mutate(order_id, lambda o: Outcome(request_cancel(o, self.core.clock())))).order
        running = self.core.placing.get(order_id)
        if running is not None:
            # A resubmission started before the request: the cancel must go out after it, never before.
            await asyncio.wait([running], timeout=deadline.left(self.timeout))
            if not running.done():
                return order  # still pending: the reconciler sends the cancel once the submission is answered
        try:
            return await asyncio.shield(
                send_cancel(self.core, self.gateway, order_id, deadline.left(self.timeout), self.drain_timeout)
            )
        except NotFound:
            # The gateway does not know the order (its submission failed or is unknown): the request
            # stays pending; recovery ends the order without submitting it, or cancels it once the
            # exchange turns out to have it.
            current = await self.core.store.get_order(order_id)
            return current if current is not None else order
        except DomainError as exc:
            # A definite refusal: nothing was cancelled, so the request is no longer pending.
            await self.core.mutate(order_id, lambda o: Outcome(cancel_refused(o, self.core.clock())))
            if isinstance(exc, ResourceExhausted | FailedPrecondition):
                raise
            raise Unavailable(f"the gateway refused the cancel: {exc.message}", reason=exc.reason) from None


@dataclass(frozen=True)
class CancelAllResult:
    """What CancelAllOrders did: confirmed, pending (carried out later), and refused now with a reason."""

    cancelled: list[Order]
    pending: list[Order]
    failed: list[tuple[str, str]]


class CancelAllOrders:
    """Cancel every open order of one user, each on its own (the exchange account is shared by all users)."""

    def __init__(self, core: Core, cancel: CancelOrder, *, concurrency: int = 8, page: int = 500):
        self.core = core
        self.cancel = cancel
        self.concurrency = concurrency
        self.page = page

    async def __call__(self, caller: Caller, symbol: str, deadline: Deadline) -> CancelAllResult:
        """Cancel the caller's PENDING and PARTIALLY_FILLED orders (of ``symbol`` if given)."""
        if symbol:
            check_symbol(symbol)
        open_orders: list[Order] = []
        before = ""
        while True:
            page = await self.core.store.list_orders(
                caller.user_id, symbol=symbol, states=ACTIVE_STATES, before_order_id=before, limit=self.page
            )
            open_orders.extend(page)
            if len(page) < self.page:
                break
            before = page[-1].order_id
        slots = asyncio.Semaphore(self.concurrency)
        result = CancelAllResult([], [], [])

        async def one(order: Order) -> None:
            async with slots:
                try:
                    after = await self.cancel(caller, order.order_id, deadline)
                except DomainError as exc:
                    result.failed.append((order.order_id, exc.message))
                    return
            if after.state is State.CANCELLED:
                result.cancelled.append(after)
            elif not after.is_final:
                result.pending.append(after)
            else:
                result.failed.append((order.order_id, f"the order ended {after.status} before the cancel"))

        await asyncio.gather(*(one(order) for order in open_orders))
        return result
