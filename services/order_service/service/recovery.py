"""Recovery at start and reconciliation while running: no order is left between two steps.

Where a crash (or a lost answer) can leave an order, and what finishes it:

    RESERVING       persisted, the reservation may or may not exist, never sent (submission only
                    starts after SUBMITTING is committed). -> ReleaseFunds(order:final) through the
                    outbox (idempotent; zero if nothing was reserved) and REJECTED
                    "interrupted before submission", in one transaction.
    SUBMITTING      reserved; SubmitOrder may or may not have reached the gateway.
    SUBMIT_UNKNOWN  the gateway (or the network) did not say whether the exchange has it.
                    -> SubmitOrder again with the SAME client order id: the gateway is idempotent on
                    it (a journaled order is returned, never sent twice; an order it never saw is
                    sent now), and its answer is applied like a first answer. A refusal that sent
                    nothing (INVALID_ARGUMENT) ends the order REJECTED with its funds released.
    NEW, PARTIALLY_FILLED  -> the stream replays every execution after the persisted cursor; the
                    gateway's journal view (GetOrder) is applied too, which can only end an order
                    whose trades are all applied.
    outbox rows     performed again at start (idempotent keys: trade id, release id).
    expire_time     re-armed for every active order.

While running, the same resolution is applied to orders that have stayed RESERVING, SUBMITTING or
SUBMIT_UNKNOWN for longer than ``resolve_after`` seconds and are not being placed by this process.
"""

from __future__ import annotations

import asyncio
import logging

from services.order_service.domain.lifecycle import apply_exchange_order, give_up
from services.order_service.domain.model import Order, Outcome
from services.order_service.domain.states import ACTIVE_STATES, IN_FLIGHT_STATES, State
from services.order_service.service.core import Core
from services.order_service.service.expiry import ExpiryScheduler
from services.order_service.service.ports import GatewayPort
from shared.errors import InvalidArgument

log = logging.getLogger("order_service.recovery")

INTERRUPTED = "interrupted before submission"


class Reconciler:
    """Finishes orders left between two steps, at start and periodically."""

    def __init__(
        self,
        core: Core,
        gateway: GatewayPort,
        expiry: ExpiryScheduler,
        *,
        interval: float = 5.0,
        resolve_after: float = 5.0,
        timeout: float = 10.0,
        concurrency: int = 16,
        drain_timeout: float = 2.0,
    ):
        self.core = core
        self.gateway = gateway
        self.expiry = expiry
        self.interval = interval
        self.resolve_after = resolve_after
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self._slots = asyncio.Semaphore(concurrency)
        self.recovered = asyncio.Event()

    async def recover(self) -> None:
        """At start: re-arm expiries, finish in-flight orders, reconcile working ones with the journal."""
        active = await self.core.store.active_orders(ACTIVE_STATES)
        for order in active:
            if order.expire_time_ms is not None:
                self.expiry.arm(order.order_id, order.expire_time_ms)
        if active:
            log.info("reconciling active orders", extra={"count": len(active)})
        await asyncio.gather(*(self._guarded(order, query_working=True) for order in active))
        self.recovered.set()

    async def run(self) -> None:
        """Every ``interval`` seconds, finish orders stuck in flight."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciliation pass failed")

    async def tick(self) -> None:
        """One pass over orders stuck in flight."""
        cutoff = self.core.clock() - int(self.resolve_after * 1000)
        stuck = await self.core.store.active_orders(IN_FLIGHT_STATES, updated_before_ms=cutoff)
        await asyncio.gather(*(self._guarded(order, query_working=False) for order in stuck))

    async def _guarded(self, order: Order, *, query_working: bool) -> None:
        if order.order_id in self.core.placing:
            return  # this process is placing it right now
        async with self._slots:
            try:
                await self.resolve(order, query_working=query_working)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "could not reconcile order; will retry", extra={"order_id": order.order_id, "error": str(exc)}
                )

    async def resolve(self, order: Order, *, query_working: bool = True) -> None:
        """Bring one order up to date with what the user service and the gateway know."""
        order_id = order.order_id
        if order.state is State.RESERVING:
            outcome = await self.core.mutate(order_id, self._interrupted)
            if outcome.effects:
                await self.core.outbox.drain(order_id, self.drain_timeout)
            log.warning("order interrupted before submission: rejected, funds released", extra={"order_id": order_id})
            return
        if order.state in (State.SUBMITTING, State.SUBMIT_UNKNOWN):
            try:
                answer = await self.gateway.submit_order(order, self.timeout)
            except InvalidArgument as exc:
                reason = f"refused by the gateway: {exc.description}"
                outcome = await self.core.mutate(order_id, lambda o: give_up(o, reason, self.core.clock()))
                if outcome.effects:
                    await self.core.outbox.drain(order_id, self.drain_timeout)
                return
            outcome = await self.core.mutate(order_id, lambda o: apply_exchange_order(o, answer, self.core.clock()))
            if outcome.effects:
                await self.core.outbox.drain(order_id, self.drain_timeout)
            return
        if query_working and order.state in (State.NEW, State.PARTIALLY_FILLED):
            answer = await self.gateway.get_order(order_id, False, self.timeout)
            outcome = await self.core.mutate(order_id, lambda o: apply_exchange_order(o, answer, self.core.clock()))
            if outcome.effects:
                await self.core.outbox.drain(order_id, self.drain_timeout)

    def _interrupted(self, order: Order) -> Outcome:
        if order.state is not State.RESERVING:
            return Outcome(order)  # moved on meanwhile
        return give_up(order, INTERRUPTED, self.core.clock())
