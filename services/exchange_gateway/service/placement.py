"""SubmitOrder: checks, admission in turn, journal, send, and the caller's answer as soon as it is known.

- An order is journaled before it is sent, and a client_order_id is sent at most once: a repeat
  returns the journaled order (a different order under the same id is ABORTED).
- Filters and rate-limit capacity are checked before anything is journaled or sent, so
  INVALID_ARGUMENT and RESOURCE_EXHAUSTED mean nothing happened.
- New orders wait for capacity in turn with the new orders of other fair-share keys (the user an
  order is for), so one user's burst cannot hold up another user's order. The key is not part of
  the order: a repeat of a client_order_id with another key is the same order.
- A definite refusal is journaled as REJECTED (with a REJECTED execution); an unknown outcome goes
  to the resolver (``resolution``).
- The work after a request has been sent runs in its own task, so that a caller that goes away
  (deadline, cancellation) cannot leave the journal behind the exchange.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from services.exchange_gateway.domain import lifecycle
from services.exchange_gateway.domain.errors import ExchangeError, ExchangeOutcome, Failure
from services.exchange_gateway.domain.model import Order, OrderRequest, OrderSnapshot, OrderStatus
from services.exchange_gateway.domain.validation import check_filters, needs_last_price
from services.exchange_gateway.service import recording
from services.exchange_gateway.service.market import Market
from services.exchange_gateway.service.order_tasks import OrderContext
from services.exchange_gateway.service.ports import RequestKind
from services.exchange_gateway.service.resolution import Resolution
from shared.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger("exchange_gateway.orders")

FAIR_SHARE_KEY = re.compile(r"[A-Za-z0-9_.:-]{0,64}")


def check_fair_share_key(key: str) -> str:
    """Return the key if it is at most 64 characters of [A-Za-z0-9_.:-], else raise InvalidArgument."""
    if not FAIR_SHARE_KEY.fullmatch(key):
        raise InvalidArgument("fair_share_key", "must be at most 64 characters of [A-Za-z0-9_.:-]")
    return key


def _same(order: Order, request: OrderRequest) -> Order:
    if not order.request.same_order(request):
        raise Aborted(
            f"client_order_id {request.client_order_id!r} was already used for a different order",
            reason="CLIENT_ORDER_ID_REUSED",
        )
    return order


class Placement:
    """Places orders once per client_order_id (see the module docstring)."""

    def __init__(self, ctx: OrderContext, market: Market, resolution: Resolution, *, record_delay_s: float = 0.005):
        self.ctx = ctx
        self.market = market
        self.resolution = resolution
        # How long the journal entry of an accepted order may wait to share a transaction (after the reply).
        self.record_delay_s = record_delay_s

    async def submit(self, request: OrderRequest, *, remaining_s: float | None, fair_share_key: str = "") -> Order:
        """Place an order once per client_order_id, in turn with other keys' orders (see the module docstring)."""
        ctx = self.ctx
        check_fair_share_key(fair_share_key)
        cid = request.client_order_id
        running = ctx.tasks.placing.get(cid)
        if running is not None:
            return _same(await asyncio.shield(running), request)
        cached = ctx.journal.cached_order(cid)
        if cached is not None:
            return _same(cached, request)
        deadline = ctx.exchange.deadline_after(remaining_s)
        try:
            try:
                rules = self.market.rules_for(request.symbol)
            except NotFound:
                raise InvalidArgument("symbol", f"{request.symbol!r} is not listed on the exchange") from None
            if needs_last_price(request, rules):
                last = await self.market.price_for_checks(request.symbol, deadline)
            else:
                last = None
            check_filters(request, rules, last)
            ticket = await ctx.exchange.admit(RequestKind.NEW_ORDER, deadline, fair_share_key=fair_share_key)
        except (InvalidArgument, FailedPrecondition, ResourceExhausted):
            # A retry of an order journaled long ago (no longer cached) gets that order, even if the
            # market has moved since; only then is the database asked (the fast path never waits on it).
            existing = await ctx.journal.get_order(cid)
            if existing is not None:
                return _same(existing, request)
            raise
        running = ctx.tasks.placing.get(cid)
        if running is not None:  # the same id arrived twice at once: one placement only
            return _same(await asyncio.shield(running), request)
        reply: asyncio.Future[Order] = asyncio.get_running_loop().create_future()
        task: asyncio.Task[Order] = ctx.tasks.spawn(
            self._answered(request, ticket, deadline, fair_share_key, reply), name=f"place-{cid}"
        )
        ctx.tasks.placing[cid] = task
        task.add_done_callback(lambda _t: ctx.tasks.placing.pop(cid, None))
        return _same(await asyncio.shield(reply), request)

    async def _answered(
        self,
        request: OrderRequest,
        ticket: Any,
        deadline: float | None,
        fair_share_key: str,
        reply: asyncio.Future[Order],
    ) -> Order:
        """Place the order; ``reply`` gets the caller's answer as soon as it is known (maybe before it is journaled)."""
        try:
            order = await self._place(request, ticket, deadline, fair_share_key, reply)
        except asyncio.CancelledError:
            if not reply.done():
                reply.cancel()
            raise
        except BaseException as exc:
            if not reply.done():
                reply.set_exception(exc)
            raise
        if not reply.done():
            reply.set_result(order)
        return order

    async def _place(
        self,
        request: OrderRequest,
        ticket: Any,
        deadline: float | None,
        fair_share_key: str,
        reply: asyncio.Future[Order] | None = None,
    ) -> Order:
        ctx = self.ctx
        cid = request.client_order_id
        timestamp = ctx.exchange.now_ms()
        fresh = Order.from_request(
            request, now_ms=ctx.clock(), request_time_ms=timestamp, recv_window_ms=ctx.exchange.recv_window_ms
        )
        order, created = await ctx.journal.transact(lambda tx: recording.insert_order(tx, fresh))
        if not created:
            return order

        async def retimestamp(ts: int) -> None:
            await ctx.journal.transact(lambda tx: recording.set_request_time(tx, cid, ts))

        try:
            snap = await ctx.exchange.new_order(
                request,
                timestamp_ms=timestamp,
                ticket=ticket,
                deadline=deadline,
                on_retimestamp=retimestamp,
                fair_share_key=fair_share_key,
            )
        except ExchangeError as err:
            if err.outcome is ExchangeOutcome.UNKNOWN or err.failure is Failure.DUPLICATE_ORDER:
                ctx.stats["unknown_outcome"] += 1
                log.warning(
                    "order outcome unknown; resolving it by query, never by resending",
                    extra={"client_order_id": cid, "error": err.describe()},
                )
                self.resolution.resolve_later(cid)
                return await self.resolution.current(cid, order)
            ctx.stats["rejected"] += 1
            reason = err.describe()
            rejected = await ctx.journal.transact(lambda tx: recording.reject(tx, cid, reason, now_ms=ctx.clock()))
            return rejected or order
        except ResourceExhausted as exc:
            # A resend (after -1021 or a failed connect) could not get capacity in time: not placed.
            reason = f"RATE_LIMIT: {exc.message}"
            rejected = await ctx.journal.transact(lambda tx: recording.reject(tx, cid, reason, now_ms=ctx.clock()))
            return rejected or order
        except BaseException:
            self.resolution.resolve_later(cid)
            raise
        return await self._apply(cid, snap, reply)

    async def _apply(self, cid: str, snap: OrderSnapshot, reply: asyncio.Future[Order] | None) -> Order:
        """Journal the exchange's answer; the caller may have it before it is journaled.

        With ``reply`` (a placement's caller): an order the exchange accepted with nothing filled
        is answered at once, and its journal entry joins the next transaction (``record_delay_s``).
        A crash before that commit leaves the order journaled as sent, which the resolver settles
        by querying the exchange, as for any outcome not yet known.
        """

        def answer_early(now: int) -> float | None:
            if reply is None or reply.done():
                return None
            early = self._accepted_answer(cid, snap, now)
            if early is None:
                return None
            reply.set_result(early)
            return self.record_delay_s

        return await self.resolution.apply(cid, snap, answer_early)

    def _accepted_answer(self, cid: str, snap: OrderSnapshot, now: int) -> Order | None:
        """The order as journaling ``snap`` will leave it, if the exchange accepted it with nothing filled."""
        if snap.status is not OrderStatus.NEW or snap.fills or snap.executed_qty:
            return None
        journaled = self.ctx.journal.cached_order(cid)
        if journaled is None or journaled.reported_new or journaled.is_final:
            return None
        change = lifecycle.accepted(
            journaled, exchange_order_id=snap.exchange_order_id, time_ms=snap.time_ms, now_ms=now
        )
        return None if change.refused is not None else change.order
