"""Keeping one order's journal entry in step with the exchange: snapshots, syncs and unknown outcomes.

An unknown outcome (timeout, 5xx, -1000, -1006, -1007) leaves the order UNKNOWN and a resolver
queries it by origClientOrderId until the exchange shows it (then NEW and whatever followed are
journaled) or until the exchange's clock is past the request's timestamp + recvWindow and the
exchange still does not know the order: then it can never appear, and it is journaled as
REJECTED. It is never sent again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from services.exchange_gateway.domain.errors import ExchangeError, Failure
from services.exchange_gateway.domain.model import OPEN_STATUSES, Order, OrderSnapshot, OrderStatus
from services.exchange_gateway.domain.validation import check_client_order_id
from services.exchange_gateway.service import recording
from services.exchange_gateway.service.order_tasks import OrderContext
from shared.errors import DomainError, NotFound, Unavailable

log = logging.getLogger("exchange_gateway.orders")

BeforeWrite = Callable[[int], "float | None"]
"""Called with the time a snapshot is journaled at, just before; returns how long the write may wait."""


class FollowUp(Protocol):
    """The cancels a sync may find still to do."""

    def cancel_soon(self, cid: str) -> None: ...

    def after_sync(self, cid: str, order: Order) -> None: ...


class Resolution:
    """Journals what the exchange says of an order: its snapshots, its queries, its unknown outcome."""

    def __init__(
        self,
        ctx: OrderContext,
        *,
        resolve_first_delay_s: float = 0.2,
        resolve_max_delay_s: float = 5.0,
        not_placed_margin_ms: int = 1000,
    ):
        self.ctx = ctx
        self.resolve_first_delay_s = resolve_first_delay_s
        self.resolve_max_delay_s = resolve_max_delay_s
        self.not_placed_margin_ms = not_placed_margin_ms
        self.follow_up: FollowUp | None = None
        """The cancellations (they and the syncs call each other: set once both exist)."""
        self._syncs: dict[str, asyncio.Task[None]] = {}
        self._resolvers: dict[str, asyncio.Task[None]] = {}

    async def current(self, cid: str, fallback: Order) -> Order:
        """The journaled order, or ``fallback`` if the journal has none."""
        return await self.ctx.journal.get_order(cid) or fallback

    def _covered(self, cid: str, snap: OrderSnapshot) -> recording.Applied | None:
        """``snap`` is already journaled (checked against the committed cache): nothing to write."""
        cached = self.ctx.journal.cached_order(cid)
        if cached is not None and recording.covers(cached, snap):
            return recording.Applied(cached)
        return None

    async def apply(self, cid: str, snap: OrderSnapshot, before_write: BeforeWrite | None = None) -> Order:
        """Journal a snapshot; fetch the order's trades (myTrades) when the journal lacks some.

        ``before_write`` (a placement's early answer) runs only when there is something to write,
        and says how long its write may wait to share a transaction.
        """
        journal = self.ctx.journal
        covered = self._covered(cid, snap)
        if covered is not None:
            assert covered.order is not None
            return covered.order  # the user data stream got there first: nothing new to journal
        now = self.ctx.clock()
        defer = before_write(now) if before_write is not None else None
        # Checked again when the journal gets to it: a stream report queued just before may settle it.
        applied = await journal.transact(
            lambda tx: recording.apply_snapshot(tx, snap, None, now_ms=now, client_order_id=cid),
            settled=lambda: self._covered(cid, snap),
            defer=defer,
        )
        if applied.order is None:
            raise NotFound(f"no order with client_order_id {cid!r}", reason="ORDER_NOT_FOUND")
        if applied.complete:
            return applied.order
        try:
            trades = await self.ctx.exchange.order_trades(snap.symbol, snap.exchange_order_id)
        except (ExchangeError, DomainError) as exc:
            log.warning("cannot fetch trades yet", extra={"client_order_id": cid, "error": str(exc)})
            self.request_sync(cid, delay=1.0)
            return applied.order
        self.ctx.stats["trades_fetched"] += 1
        applied = await journal.transact(
            lambda tx: recording.apply_snapshot(tx, snap, trades, now_ms=self.ctx.clock(), client_order_id=cid)
        )
        if not applied.complete:
            self.request_sync(cid, delay=1.0)  # myTrades behind the order: look again shortly
        assert applied.order is not None
        return applied.order

    # --- GetOrder and syncing with the exchange ---------------------------------------------------------

    async def get(self, client_order_id: str, *, refresh: bool, remaining_s: float | None) -> Order:
        """The journaled order, or (refresh) the exchange's view of it, journaled first.

        A placement answered but not yet journaled (its answer is written just after the reply) is
        waited for, so that a caller reads at least what SubmitOrder answered.
        """
        cid = check_client_order_id(client_order_id)
        placing = self.ctx.tasks.placing.get(cid)
        if placing is not None:
            self.ctx.journal.hurry()
            await asyncio.wait([placing], timeout=remaining_s)
        order = await self.ctx.journal.get_order(cid)
        if order is None:
            raise NotFound(f"no order with client_order_id {cid!r}", reason="ORDER_NOT_FOUND")
        if not refresh:
            return order
        try:
            applied = await self.sync(cid, deadline=self.ctx.exchange.deadline_after(remaining_s))
        except ExchangeError as err:
            raise Unavailable(f"cannot query the exchange: {err.describe()}", reason="EXCHANGE_UNAVAILABLE")
        return applied.order or order

    def _past_window(self, order: Order) -> bool:
        """Whether the exchange can no longer accept the order's last request (timestamp + recvWindow passed)."""
        return self.ctx.exchange.now_ms() > order.request_time_ms + order.recv_window_ms + self.not_placed_margin_ms

    async def sync(
        self, cid: str, *, deadline: float | None = None, missing_from_open: bool = False
    ) -> recording.Applied:
        """Query the order by origClientOrderId and journal what the exchange says.

        ``missing_from_open``: the account's open orders, listed just before, did not include it; if
        the exchange now also says it does not exist, although it had accepted it, it forgot it.
        """
        ctx = self.ctx
        order = await ctx.journal.get_order(cid)
        if order is None:
            return recording.Applied(None)
        if ctx.tasks.in_flight(cid):
            return recording.Applied(order, True)  # the submission in flight settles it
        try:
            snap = await ctx.exchange.query_order(order.symbol, cid, deadline=deadline)
        except ExchangeError as err:
            if err.failure is not Failure.NO_SUCH_ORDER:
                raise
            if order.status is OrderStatus.UNKNOWN and self._past_window(order):
                ctx.stats["proven_not_placed"] += 1
                reason = (
                    "NOT_PLACED: the exchange has no order with this client order id and its clock is past the "
                    "request's timestamp + recvWindow, so it can no longer accept it"
                )
                log.warning("unknown outcome resolved: never placed", extra={"client_order_id": cid})
                rejected = await ctx.journal.transact(lambda tx: recording.reject(tx, cid, reason, now_ms=ctx.clock()))
                return recording.Applied(rejected)
            if missing_from_open and order.status in OPEN_STATUSES:
                return recording.Applied(await self._forgotten(cid, err))
            return recording.Applied(order, order.status is not OrderStatus.UNKNOWN)
        order = await self.apply(cid, snap)
        return recording.Applied(order, not recording.missing(order, snap.executed_qty))

    async def _forgotten(self, cid: str, err: ExchangeError) -> Order | None:
        """The exchange no longer knows an order it had accepted: record the anomaly, end the order EXPIRED."""
        self.ctx.stats["exchange_forgot_order"] += 1
        answer = err.describe()
        return await self.ctx.journal.transact(lambda tx: recording.forgotten(tx, cid, answer, now_ms=self.ctx.clock()))

    def request_sync(self, cid: str, *, delay: float = 0.0) -> None:
        """Sync one order in the background (coalesced), retrying a few times until the journal agrees."""
        if cid in self._syncs or self.ctx.tasks.closed:
            return

        async def run() -> None:
            pause = max(delay, 0.0)
            try:
                for _ in range(6):
                    await asyncio.sleep(pause)
                    try:
                        applied = await self.sync(cid)
                    except (ExchangeError, DomainError) as exc:
                        log.info("order sync failed; will retry", extra={"client_order_id": cid, "error": str(exc)})
                        applied = recording.Applied(None, False)
                    order = applied.order
                    if order is not None and self.follow_up is not None:
                        self.follow_up.after_sync(cid, order)
                    if applied.complete and order is not None:
                        return
                    pause = min(max(pause * 2, 0.5), 10.0)
            finally:
                self._syncs.pop(cid, None)

        self._syncs[cid] = self.ctx.tasks.spawn(run(), name=f"sync-{cid}")

    # --- unknown outcomes -------------------------------------------------------------------------------

    def resolve_later(self, cid: str) -> None:
        """Start the resolver of an order of unknown outcome (one per order)."""
        if cid in self._resolvers or self.ctx.tasks.closed:
            return
        self._resolvers[cid] = self.ctx.tasks.spawn(self._resolve(cid), name=f"resolve-{cid}")

    async def _resolve(self, cid: str) -> None:
        """Query an order of unknown outcome until it shows up or is proven never placed."""
        ctx = self.ctx
        delay = self.resolve_first_delay_s
        order: Order | None = None
        try:
            while not ctx.tasks.closed:
                await asyncio.sleep(delay)
                order = await ctx.journal.get_order(cid)
                if order is None or order.status is not OrderStatus.UNKNOWN:
                    break
                if ctx.tasks.in_flight(cid):
                    continue
                try:
                    order = (await self.sync(cid)).order or order
                except (ExchangeError, DomainError) as exc:
                    log.info("resolving order: query failed", extra={"client_order_id": cid, "error": str(exc)})
                if order.status is not OrderStatus.UNKNOWN:
                    break
                delay = min(delay * 2, self.resolve_max_delay_s)
                until_proof = order.request_time_ms + order.recv_window_ms + self.not_placed_margin_ms
                left_ms = until_proof - ctx.exchange.now_ms()
                if left_ms > 0:
                    delay = min(delay, left_ms / 1000.0 + 0.05)
            if order is not None and order.status is not OrderStatus.UNKNOWN:
                ctx.stats["resolved"] += 1
                log.info("unknown outcome resolved", extra={"client_order_id": cid, "status": order.status.value})
                if order.cancel_requested and order.status in OPEN_STATUSES and self.follow_up is not None:
                    self.follow_up.cancel_soon(cid)
        finally:
            self._resolvers.pop(cid, None)
