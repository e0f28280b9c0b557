"""PlaceOrder: validate, then persist and reserve at once, submit, answer, record.

    1. validate everything (symbol rules from the cache)         nothing written
    2. INSERT the order as PLACING                               txn 1; UNIQUE(user, client_order_id):
                                                                 a duplicate returns the first order
    3. ReserveFunds(order_id, ...) at the user service           idempotent on order_id; runs at the
                                                                 same time as step 2
    4. SubmitOrder(client_order_id = order_id) at the gateway    idempotent on client_order_id
    5. answer the caller, then UPDATE with the gateway's answer  txn 2, deferred: it joins the next
       (at once, before answering, if it was refused)            transaction (``record_delay``)

One durable write of this service on the path, because both remote steps are idempotent on keys
fixed before step 2: an order interrupted anywhere after its INSERT is finished by asking the gateway
whether it has it and, if not, doing steps 3 and 4 again with the same keys; an accepted order whose
UPDATE was lost gets the gateway's answer the same way (see ``recovery``). A reservation whose INSERT
never committed is released by recovery at the next start (``Reconciler.release_orphans``). The
whole sequence runs as a task of its own, shielded from the caller: a client that disconnects or
runs out of deadline cannot stop it between two steps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from services.order_service.domain.lifecycle import apply_exchange_order, submit_unknown
from services.order_service.domain.model import ORDER_ID_PREFIX, Caller, Order, Submission, UserStatus, final_release
from services.order_service.domain.placement import (
    NewOrderRequest,
    ValidOrder,
    check_symbol,
    differing_field,
    needs_reference_price,
    reservation,
    submission,
    validate,
)
from services.order_service.domain.states import State
from services.order_service.service.core import Core
from services.order_service.service.deadline import Deadline
from services.order_service.service.expiry import ExpiryScheduler
from services.order_service.service.limits import FairShare
from services.order_service.service.market import MarketData
from services.order_service.service.ports import GatewayPort, OrderTx, OutboxEntry, UserPort
from shared.errors import (
    OUTCOME_UNKNOWN,
    Aborted,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from shared.ids import new_id

log = logging.getLogger("order_service.placement")


class PlaceOrder:
    """The PlaceOrder use case."""

    def __init__(
        self,
        core: Core,
        users: UserPort,
        gateway: GatewayPort,
        market: MarketData,
        expiry: ExpiryScheduler,
        *,
        fair_share: FairShare,
        protection: Decimal = Decimal("0.05"),
        reserve_timeout: float = 5.0,
        submit_timeout: float = 10.0,
        drain_timeout: float = 2.0,
        record_delay: float = 0.005,
    ):
        self.core = core
        self.users = users
        self.gateway = gateway
        self.market = market
        self.expiry = expiry
        self.fair_share = fair_share
        self.protection = protection
        self.reserve_timeout = reserve_timeout
        self.submit_timeout = submit_timeout
        self.drain_timeout = drain_timeout
        self.record_delay = record_delay
        self._by_client_id: dict[tuple[str, str], asyncio.Future[Order]] = {}

    async def __call__(self, caller: Caller, request: NewOrderRequest, deadline: Deadline) -> Order:
        """Place the order (or return the caller's earlier order with the same client_order_id)."""
        if caller.status is not UserStatus.ACTIVE:
            raise FailedPrecondition(
                f"user {caller.user_id} is {caller.status}; only ACTIVE users may place orders",
                reason="USER_NOT_ACTIVE",
                metadata={"user_id": caller.user_id, "status": str(caller.status)},
            )
        check_symbol(request.symbol)
        rules = await self.market.rules(request.symbol)
        last_price: Decimal | None = None
        if needs_reference_price(request.side, request.type, rules):
            last_price = await self.market.last_price(request.symbol)
        now = self.core.clock()
        valid = validate(request, rules, now, last_price)

        key = (caller.user_id, valid.client_order_id)
        if valid.client_order_id:
            running = self._by_client_id.get(key)
            if running is not None:
                # The same client_order_id is being placed right now: answer with its outcome.
                return _same_or_abort(await asyncio.shield(running), valid)

        self.fair_share.admit(caller.user_id)  # the user's share of the exchange, before anything is written
        order_id = new_id(ORDER_ID_PREFIX)
        asset, amount = reservation(valid, rules, last_price, self.protection)
        order = Order(
            order_id=order_id,
            client_order_id=valid.client_order_id or order_id,
            user_id=caller.user_id,
            symbol=valid.symbol,
            base_asset=rules.base_asset,
            quote_asset=rules.quote_asset,
            side=valid.side,
            type=valid.type,
            time_in_force=valid.time_in_force,
            quantity=valid.quantity,
            price=valid.price,
            stop_price=valid.stop_price,
            expire_time_ms=valid.expire_time_ms,
            reserve_asset=asset,
            reserve_amount=amount,
            state=State.PLACING,
            create_time_ms=now,
            update_time_ms=now,
        )
        sending = submission(order, rules.tick_size)
        reply: asyncio.Future[Order] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._run(order, sending, deadline, reply), name=f"place-{order_id}")
        self.core.placing[order_id] = task
        if valid.client_order_id:
            self._by_client_id[key] = reply

        def forget(_task: asyncio.Task[None]) -> None:
            self.core.placing.pop(order_id, None)
            self.core.recording.pop(order_id, None)
            if self._by_client_id.get(key) is reply:
                del self._by_client_id[key]

        task.add_done_callback(forget)
        return _same_or_abort(await asyncio.shield(reply), valid)

    async def _run(self, order: Order, sending: Submission, deadline: Deadline, reply: asyncio.Future[Order]) -> None:
        """Place the order; ``reply`` is answered as soon as the caller's answer is known.

        The task itself may go on after that (recording the gateway's answer), and stays in
        ``core.placing`` until it is done, so that recovery and cancels wait for it.
        """
        try:
            order = await self._place(order, sending, deadline, reply)
        except asyncio.CancelledError:
            if not reply.done():
                reply.cancel()
            raise
        except Exception as exc:
            if not reply.done():
                reply.set_exception(exc)
            else:  # the caller has its answer; the order stays PLACING and recovery records it
                log.exception("recording the gateway's answer failed", extra={"order_id": order.order_id})
            return
        except BaseException as exc:  # the process is going down (as the crash tests simulate it)
            if not reply.done():
                reply.set_exception(exc)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            return
        if not reply.done():
            reply.set_result(order)

    async def _place(
        self, order: Order, sending: Submission, deadline: Deadline, reply: asyncio.Future[Order]
    ) -> Order:
        existing = await self._store_and_reserve(order, deadline)
        if existing is not None:
            return existing
        inserted = time.perf_counter()

        # Step 4: submit.
        try:
            answer = await self.gateway.submit_order(order, sending, deadline.left(self.submit_timeout))
        except (InvalidArgument, ResourceExhausted, PermissionDenied, Unauthenticated) as exc:
            # The gateway promises nothing was sent: undo the reservation and forget the order.
            await self._withdraw(order)
            if isinstance(exc, InvalidArgument | ResourceExhausted):
                raise
            raise Unavailable(f"the gateway refused the request: {exc.message}", reason=exc.reason) from None
        except DomainError as exc:
            # Sent or not, nobody knows: the gateway resolves it and the stream (or the reconciler) tells.
            self._sent(order, inserted)
            log.warning("submission outcome unknown", extra={"order_id": order.order_id, "error": str(exc)})
            outcome = await self.core.mutate(order.order_id, lambda o: submit_unknown(o, self.core.clock()))
            self._arm_expiry(outcome.order)
            return outcome.order

        self._sent(order, inserted)
        # Step 5: record the answer (fills only ever come from the stream).
        now = self.core.clock()
        preview = apply_exchange_order(order, answer, now)
        defer: float | None = None
        if not preview.effects and not preview.order.is_final and preview.order.state is not State.PLACING:
            # Accepted: the caller is answered now, and the answer is written with the next transaction
            # (or within record_delay). A crash before that commit leaves the order PLACING, and
            # recovery records the same answer from the gateway (queried by client order id).
            reply.set_result(preview.order)
            defer = self.record_delay
            task = asyncio.current_task()
            if task is not None:
                self.core.recording[order.order_id] = (order.user_id, task)
        outcome = await self.core.mutate(order.order_id, lambda o: apply_exchange_order(o, answer, now), defer=defer)
        if outcome.effects:
            await self.core.outbox.drain(order.order_id, deadline.left(self.drain_timeout))
        self._arm_expiry(outcome.order)
        return outcome.order

    async def _store_and_reserve(self, order: Order, deadline: Deadline) -> Order | None:
        """Steps 2 and 3; the order already stored under its client_order_id if there is one."""

        # Steps 2 and 3 at once: the INSERT (a duplicate client_order_id returns the first order
        # unchanged) and the reservation do not depend on each other. Both are done before anything
        # is sent. A reservation whose order was not stored (a duplicate, a failed INSERT, a crash
        # between the two commits) is released: here, or by recovery at the next start.
        def insert(t: OrderTx) -> Order | None:
            if t.insert_order(order):
                return None
            return t.find_by_client_order_id(order.user_id, order.client_order_id)

        inserting = asyncio.ensure_future(self.core.store.write(insert))
        reserving = asyncio.ensure_future(
            self.users.reserve_funds(
                order.order_id,
                order.user_id,
                order.reserve_asset,
                order.reserve_amount,
                deadline.left(self.reserve_timeout),
            )
        )
        try:
            existing = await inserting
        except Exception:
            await self._unreserve(order, reserving)
            raise
        if existing is not None:
            await self._unreserve(order, reserving)
            return existing
        self.fair_share.opened(order)

        try:
            await reserving
        except OUTCOME_UNKNOWN as exc:
            # The reservation may exist. The order stays PLACING and the reconciler finishes it (same
            # keys: the reservation is made at most once, the order sent at most once).
            log.warning("reservation outcome unknown", extra={"order_id": order.order_id, "error": str(exc)})
            raise Unavailable(
                f"could not reserve funds ({exc.message}); order {order.order_id} is being resolved, "
                "see GetOrder or place again with the same client_order_id",
                reason="RESERVATION_UNKNOWN",
                metadata={"order_id": order.order_id},
            ) from None
        except DomainError as exc:
            # A definite refusal (insufficient funds, user not ACTIVE...): nothing was reserved.
            await self.core.store.write(lambda t: t.delete_order(order.order_id))
            self.fair_share.closed(order)
            if isinstance(exc, FailedPrecondition | InvalidArgument):
                raise
            raise Unavailable(f"the user service refused the reservation: {exc.message}", reason=exc.reason) from None

        return None

    async def _unreserve(self, order: Order, reserving: asyncio.Future[None]) -> None:
        """The order was not stored: give back whatever its reservation holds (nothing else refers to it)."""
        try:
            await reserving
        except OUTCOME_UNKNOWN:
            pass  # it may exist: release (a release of no reservation releases nothing)
        except DomainError:
            return  # refused: nothing was reserved
        try:
            release = final_release(order.order_id)
            await self.users.release_funds(order.order_id, release.release_id, None, self.reserve_timeout)
        except DomainError as exc:
            log.warning(
                "could not release the reservation of an order that was not stored; the next start releases it",
                extra={"order_id": order.order_id, "error": str(exc)},
            )

    def _sent(self, order: Order, inserted: float) -> None:
        telemetry = self.core.telemetry
        telemetry.order_placed(order)
        telemetry.submit_answered(time.perf_counter() - inserted)

    async def _withdraw(self, order: Order) -> None:
        def tx(t: OrderTx) -> list[OutboxEntry]:
            t.delete_order(order.order_id)
            return [t.add_effect(final_release(order.order_id))]

        entries = await self.core.store.write(tx)
        self.fair_share.closed(order)
        self.core.outbox.enqueue(entries)
        await self.core.outbox.drain(order.order_id, self.drain_timeout)

    def _arm_expiry(self, order: Order) -> None:
        if order.expire_time_ms is not None and not order.is_final:
            self.expiry.arm(order.order_id, order.expire_time_ms)


def _same_or_abort(order: Order, request: ValidOrder) -> Order:
    """The order placed under the request's client_order_id, if it is the same request; ABORTED otherwise."""
    field = differing_field(order, request)
    if field is None:
        return order
    raise Aborted(
        f"client_order_id {order.client_order_id} is already used for order {order.order_id} with another {field}",
        reason="CLIENT_ORDER_ID_REUSED",
        metadata={"field": field, "order_id": order.order_id},
    )
