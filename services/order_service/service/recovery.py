"""Recovery at start and reconciliation while running: no order is left between two steps.

Where a crash (or a lost answer) can leave an order, and what finishes it:

    PLACING         persisted; ReserveFunds and SubmitOrder may each have happened or not (submission
                    only ever follows a successful reservation). -> ask the gateway (GetOrder, journal):
                    - it has the order: it was reserved and sent; apply its answer like a first answer;
                    - it does not, and the order is younger than ``resume_window``: finish the placement
                      with the SAME keys: ReserveFunds(order_id) (idempotent: reserves at most once) then
                      SubmitOrder(client_order_id) (idempotent: the gateway never sends twice, so a
                      submission from before the crash that is still on its way cannot double it);
                    - it does not, and the order is older: nothing can still be on its way; release
                      whatever was reserved (ReleaseFunds is idempotent, zero if nothing was) and end it
                      REJECTED "interrupted before submission".
                    A definite refusal on the way (insufficient funds now, a filter the gateway refuses)
                    ends it REJECTED with the funds released.
    SUBMIT_UNKNOWN  -> SubmitOrder again with the same client order id (a journaled order is returned,
                    one the gateway never saw is sent now); its answer is applied.
    NEW, PARTIALLY_FILLED -> the stream replays every execution after the persisted cursor; at start the
                    gateway's journal view (GetOrder) is applied too, which can only end an order whose
                    trades are all applied here.
    outbox rows     performed again at start (idempotent keys: trade id, release id).
    expire_time     re-armed for every active order.

While running, the same resolution is applied to orders that have stayed PLACING or SUBMIT_UNKNOWN
for longer than ``resolve_after`` seconds and are not being placed by this process.
"""

from __future__ import annotations

import asyncio
import logging

from services.order_service.domain.lifecycle import apply_exchange_order, give_up
from services.order_service.domain.model import ExchangeOrder, Order, Outcome
from services.order_service.domain.states import ACTIVE_STATES, IN_FLIGHT_STATES, State
from services.order_service.service.core import Core
from services.order_service.service.expiry import ExpiryScheduler
from services.order_service.service.ports import GatewayPort, UserPort
from shared.errors import DeadlineExceeded, DomainError, Internal, InvalidArgument, NotFound, Unavailable

log = logging.getLogger("order_service.recovery")

INTERRUPTED = "interrupted before submission"
OUTCOME_UNKNOWN = (Unavailable, DeadlineExceeded, Internal)


class Reconciler:
    """Finishes orders left between two steps, at start and periodically."""

    def __init__(
        self,
        core: Core,
        users: UserPort,
        gateway: GatewayPort,
        expiry: ExpiryScheduler,
        *,
        interval: float = 5.0,
        resolve_after: float = 5.0,
        resume_window: float = 60.0,
        timeout: float = 10.0,
        concurrency: int = 16,
        drain_timeout: float = 2.0,
    ):
        self.core = core
        self.users = users
        self.gateway = gateway
        self.resume_window = resume_window
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
        if order.state is State.PLACING:
            await self._finish_placing(order)
        elif order.state is State.SUBMIT_UNKNOWN:
            await self._submit(order)
        elif query_working and order.state in (State.NEW, State.PARTIALLY_FILLED):
            await self._apply(order.order_id, await self.gateway.get_order(order.order_id, False, self.timeout))

    async def _finish_placing(self, order: Order) -> None:
        try:
            known: ExchangeOrder | None = await self.gateway.get_order(order.order_id, False, self.timeout)
        except NotFound:
            known = None
        if known is not None:
            await self._apply(order.order_id, known)  # it was reserved and sent before the interruption
            return
        age_ms = self.core.clock() - order.create_time_ms
        if age_ms > self.resume_window * 1000:
            await self._give_up(order.order_id, INTERRUPTED)
            return
        try:
            await self.users.reserve_funds(
                order.order_id, order.user_id, order.reserve_asset, order.reserve_amount, self.timeout
            )
        except OUTCOME_UNKNOWN:
            raise  # try again at the next pass
        except DomainError as exc:
            await self._give_up(order.order_id, f"{INTERRUPTED}; funds could not be reserved: {exc.message}")
            return
        await self._submit(order)

    async def _submit(self, order: Order) -> None:
        try:
            answer = await self.gateway.submit_order(order, self.timeout)
        except InvalidArgument as exc:
            await self._give_up(order.order_id, f"refused by the gateway: {exc.description}")
            return
        await self._apply(order.order_id, answer)

    async def _apply(self, order_id: str, answer: ExchangeOrder) -> None:
        outcome = await self.core.mutate(order_id, lambda o: apply_exchange_order(o, answer, self.core.clock()))
        if outcome.effects:
            await self.core.outbox.drain(order_id, self.drain_timeout)

    async def _give_up(self, order_id: str, reason: str) -> None:
        def change(order: Order) -> Outcome:
            if order.state is not State.PLACING:
                return Outcome(order)  # moved on meanwhile
            return give_up(order, reason, self.core.clock())

        outcome = await self.core.mutate(order_id, change)
        if outcome.effects:
            await self.core.outbox.drain(order_id, self.drain_timeout)
            log.warning("order given up before submission", extra={"order_id": order_id, "reason": reason})
