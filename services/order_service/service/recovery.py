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
    either, with a cancel (or our expiry) requested -> NEVER submitted again. Ask the gateway: if it has the
                    order, its answer is applied and the cancel is sent; if it does not, and no submission can
                    still be on its way (the last change is older than ``submit_window``), the order ends
                    CANCELLED (EXPIRED for our expiry) with nothing filled and its funds released.
    NEW, PARTIALLY_FILLED -> the stream replays every execution after the persisted cursor; at start the
                    gateway's journal view (GetOrder) is applied too, which can only end an order whose
                    trades are all applied here.
    cancel requested -> the cancel is sent again until the exchange answers definitively (cancelled, or
                    already final): a cancel whose call failed (gateway down, restarted, rate limited) is
                    never forgotten.
    outbox rows     performed again at start (idempotent keys: trade id, release id).
    expire_time     re-armed for every active order.

While running, the same resolution is applied to orders that have stayed PLACING or SUBMIT_UNKNOWN
for longer than ``resolve_after`` seconds and are not being placed by this process, and the cancel
of every order whose cancel request is older than ``cancel_retry_after`` is sent again. While such a
cancel is waiting, passes run every ``cancel_retry_interval`` so that it goes out within seconds of
the gateway's return.
"""

from __future__ import annotations

import asyncio
import logging

from services.order_service.domain.lifecycle import apply_exchange_order, cancel_refused, end, give_up
from services.order_service.domain.model import ORDER_ID_PREFIX, ExchangeOrder, Order, Outcome, final_release
from services.order_service.domain.placement import submission
from services.order_service.domain.states import ACTIVE_STATES, IN_FLIGHT_STATES, State
from services.order_service.service.cancellation import send_cancel
from services.order_service.service.core import Core
from services.order_service.service.expiry import ExpiryScheduler
from services.order_service.service.market import MarketData
from services.order_service.service.ports import GatewayPort, UserPort
from shared.errors import (
    OUTCOME_UNKNOWN,
    DomainError,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from shared.ids import first_id_at, id_time_ms

log = logging.getLogger("order_service.recovery")

INTERRUPTED = "interrupted before submission"
# How much older than the newest stored order an orphaned reservation may be: a placement's INSERT
# and reservation both finish within its reservation timeout, far less than this.
ORPHAN_MARGIN_MS = 60_000
WORKING_STATES = frozenset({State.NEW, State.PARTIALLY_FILLED})


class Reconciler:
    """Finishes orders left between two steps, at start and periodically."""

    def __init__(
        self,
        core: Core,
        users: UserPort,
        gateway: GatewayPort,
        expiry: ExpiryScheduler,
        market: MarketData,
        *,
        interval: float = 5.0,
        resolve_after: float = 5.0,
        resume_window: float = 60.0,
        timeout: float = 10.0,
        concurrency: int = 16,
        drain_timeout: float = 2.0,
        submit_window: float = 25.0,
        cancel_retry_after: float = 1.0,
        cancel_retry_interval: float = 1.0,
    ):
        self.core = core
        self.users = users
        self.gateway = gateway
        self.market = market
        # A submission (placement's or ours) gives up within its timeout; twice the longest, so that
        # an order the gateway does not know after this long can no longer reach it.
        self.submit_window = submit_window
        self.cancel_retry_after = cancel_retry_after
        self.cancel_retry_interval = cancel_retry_interval
        self.resume_window = resume_window
        self.expiry = expiry
        self.interval = interval
        self.resolve_after = resolve_after
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self._slots = asyncio.Semaphore(concurrency)
        self.recovered = asyncio.Event()
        # Every order id this process makes sorts after the first id of this moment.
        self.started_ms = core.clock()

    async def recover(self) -> None:
        """At start: re-arm expiries, finish in-flight orders, reconcile working ones with the journal."""
        active = await self.core.store.active_orders(ACTIVE_STATES)
        for order in active:
            if order.expire_time_ms is not None:
                self.expiry.arm(order.order_id, order.expire_time_ms)
        if active:
            log.info("reconciling active orders", extra={"count": len(active)})
        await asyncio.gather(*(self._guarded(order, query_working=True) for order in active))
        try:
            await self.release_orphans()
        except DomainError as exc:
            log.warning(
                "could not look for orphaned reservations; the next start looks again", extra={"error": str(exc)}
            )
        self.recovered.set()

    async def release_orphans(self) -> list[str]:
        """Release the reservations of orders that were never stored; return their order ids.

        A placement reserves while it stores the order, so a crash between the reservation's commit
        and the INSERT's leaves a reservation no order refers to. Such an order id is younger than the
        newest stored order less the time a placement may take (``ORPHAN_MARGIN_MS``) and older than
        this process; the user service lists the open reservations in that range of ids.
        """
        newest = await self.core.store.newest_order_id()
        lower_ms = (id_time_ms(newest) if newest else self.started_ms) - ORPHAN_MARGIN_MS
        candidates = await self.users.open_reservations(
            first_id_at(ORDER_ID_PREFIX, lower_ms), first_id_at(ORDER_ID_PREFIX, self.started_ms), self.timeout
        )
        if not candidates:
            return []
        stored = {order.order_id for order in await self.core.store.get_orders(candidates)}
        orphans = [order_id for order_id in candidates if order_id not in stored]
        for order_id in orphans:
            release = final_release(order_id)
            await self.users.release_funds(order_id, release.release_id, None, self.timeout)
            log.warning("released the reservation of an order that was never stored", extra={"order_id": order_id})
        return orphans

    async def run(self) -> None:
        """Every ``interval`` seconds (every ``cancel_retry_interval`` while a cancel waits), reconcile."""
        waiting = False
        while True:
            await asyncio.sleep(self.cancel_retry_interval if waiting else self.interval)
            try:
                waiting = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reconciliation pass failed")

    async def tick(self) -> bool:
        """One pass over orders stuck in flight and cancels not yet confirmed; True if a cancel still waits."""
        now = self.core.clock()
        stuck = await self.core.store.active_orders(
            IN_FLIGHT_STATES, updated_before_ms=now - int(self.resolve_after * 1000)
        )
        cancelling = await self.core.store.cancel_pending_orders(now - int(self.cancel_retry_after * 1000))
        todo = {order.order_id: order for order in stuck}
        todo.update((order.order_id, order) for order in cancelling)
        await asyncio.gather(*(self._guarded(order, query_working=False) for order in todo.values()))
        if not cancelling:
            return False
        return any(not o.is_final for o in await self.core.store.get_orders([o.order_id for o in cancelling]))

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
        wants_cancel = order.cancel_requested or order.expire_requested
        if order.state in IN_FLIGHT_STATES and wants_cancel:
            await self._cancel_in_flight(order)
        elif order.state is State.PLACING:
            await self._finish_placing(order)
        elif order.state is State.SUBMIT_UNKNOWN:
            await self._submit(order)
        elif order.state in WORKING_STATES:
            if query_working:
                await self._apply(order.order_id, await self.gateway.get_order(order.order_id, False, self.timeout))
            if wants_cancel:
                await self._resend_cancel(order.order_id)

    async def _cancel_in_flight(self, order: Order) -> None:
        """An order whose cancel was requested before the exchange was known to have it: never submit it."""
        try:
            known: ExchangeOrder | None = await self.gateway.get_order(order.order_id, False, self.timeout)
        except NotFound:
            known = None
        if known is not None:
            await self._apply(order.order_id, known)
            await self._resend_cancel(order.order_id)
            return
        if self.core.clock() - order.update_time_ms <= self.submit_window * 1000:
            return  # a submission may still be on its way to the gateway: ask again at the next pass
        target = State.EXPIRED if order.expire_requested else State.CANCELLED

        def change(current: Order) -> Outcome:
            if current.state not in IN_FLIGHT_STATES:
                return Outcome(current)  # the exchange's answer arrived meanwhile
            return end(current, target, "", 0, self.core.clock())

        outcome = await self.core.mutate(order.order_id, change)
        if outcome.effects:
            log.info(
                "order cancelled before it reached the exchange",
                extra={"order_id": order.order_id, "state": str(outcome.order.state)},
            )
            await self.core.outbox.drain(order.order_id, self.drain_timeout)

    async def _resend_cancel(self, order_id: str) -> None:
        """Send a requested cancel again; a definite refusal ends the request, anything else retries."""
        try:
            await send_cancel(self.core, self.gateway, order_id, self.timeout, self.drain_timeout)
        except (NotFound, ResourceExhausted):
            return  # not at the exchange yet, or no capacity now: the next pass sends it again
        except DomainError as exc:
            log.error(
                "the exchange refused a requested cancel; the order keeps working",
                extra={"order_id": order_id, "error": str(exc)},
            )
            await self.core.mutate(order_id, lambda o: Outcome(cancel_refused(o, self.core.clock())))

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
        # Registered before the cancel flag is read: a CancelOrder that commits its flag after this read
        # finds the submission registered and waits for it, so its cancel is sent after, never before.
        task = asyncio.current_task()
        assert task is not None
        self.core.placing[order.order_id] = task
        try:
            current = await self.core.store.get_order(order.order_id)
            if current is None or current.cancel_requested or current.expire_requested:
                return  # a cancel was requested meanwhile: the next pass resolves it without submitting
            await self._send(order)
        finally:
            if self.core.placing.get(order.order_id) is task:
                del self.core.placing[order.order_id]

    async def _send(self, order: Order) -> None:
        rules = await self.market.rules(order.symbol)
        try:
            answer = await self.gateway.submit_order(order, submission(order, rules.tick_size), self.timeout)
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
