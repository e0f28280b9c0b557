"""Order use cases: submit, cancel, query, and keeping the journal in step with the exchange.

Guarantees (see the proto and ../shared/DESIGN.md):
- An order is journaled before it is sent, and a client_order_id is sent at most once: a repeat
  returns the journaled order (a different order under the same id is ABORTED).
- Filters and rate-limit capacity are checked before anything is journaled or sent, so
  INVALID_ARGUMENT and RESOURCE_EXHAUSTED mean nothing happened.
- New orders wait for capacity in turn with the new orders of other fair-share keys (the user an
  order is for), so one user's burst cannot hold up another user's order. The key is not part of
  the order: a repeat of a client_order_id with another key is the same order.
- A definite refusal is journaled as REJECTED (with a REJECTED execution). An unknown outcome
  (timeout, 5xx, -1000, -1006, -1007) leaves the order UNKNOWN and a resolver queries it by
  origClientOrderId until the exchange shows it (then NEW and whatever followed are journaled) or
  until the exchange's clock is past the request's timestamp + recvWindow and the exchange still
  does not know the order: then it can never appear, and it is journaled as REJECTED. It is never
  sent again.
- The work after a request has been sent runs in its own task, so that a caller that goes away
  (deadline, cancellation) cannot leave the journal behind the exchange.
- Reconciliation also catches an exchange that forgot: an order it had accepted, that the journal
  has open and that it answers "Order does not exist" for, is an EXCHANGE_FORGOT_ORDER anomaly
  and is ended as EXPIRED, so that the consumer releases what it holds for it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from services.exchange_gateway.domain import lifecycle
from services.exchange_gateway.domain.errors import ExchangeError, ExchangeOutcome, Failure
from services.exchange_gateway.domain.model import (
    OPEN_STATUSES,
    Anomaly,
    ExchangeEvent,
    Order,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
)
from services.exchange_gateway.domain.validation import check_client_order_id, check_filters, needs_last_price
from services.exchange_gateway.service import recording
from services.exchange_gateway.service.foreign import ForeignOrders
from services.exchange_gateway.service.market import Market
from services.exchange_gateway.service.ports import EventSource, Exchange, Journal, RequestKind
from shared.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from shared.logs import security_log
from shared.timeutil import now_ms as wall_ms

log = logging.getLogger("exchange_gateway.orders")

FAIR_SHARE_KEY = re.compile(r"[A-Za-z0-9_.:-]{0,64}")


def check_fair_share_key(key: str) -> str:
    """Return the key if it is at most 64 characters of [A-Za-z0-9_.:-], else raise InvalidArgument."""
    if not FAIR_SHARE_KEY.fullmatch(key):
        raise InvalidArgument("fair_share_key", "must be at most 64 characters of [A-Za-z0-9_.:-]")
    return key


class Orders:
    """The order use cases over the Exchange and Journal ports."""

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
        self.exchange = exchange
        self.market = market
        self.events = events
        self.resolve_first_delay_s = resolve_first_delay_s
        self.resolve_max_delay_s = resolve_max_delay_s
        self.not_placed_margin_ms = not_placed_margin_ms
        self.clock = clock
        # How long the journal entry of an accepted order may wait to share a transaction (after the reply).
        self.record_delay_s = record_delay_s
        self.stats: Counter[str] = Counter()
        self._inflight: dict[str, asyncio.Task[Order]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._syncs: dict[str, asyncio.Task[None]] = {}
        self._resolvers: dict[str, asyncio.Task[None]] = {}
        self._cancels: set[str] = set()
        self._cancel_wanted: set[str] = set()
        self._reconcile_lock = asyncio.Lock()
        self._closed = False
        self.foreign = ForeignOrders(journal, exchange, cancel=cancel_foreign, spawn=self.spawn, clock=clock)

    # --- life cycle -----------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` in the background, keeping a reference and logging a failure."""
        task = asyncio.create_task(coro, name=name)
        self._background.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._background.discard(t)
            if not t.cancelled() and t.exception() is not None:
                exc = t.exception()
                if not isinstance(exc, (DomainError, ExchangeError)):
                    log.error("background task %s failed", name, exc_info=exc)

        task.add_done_callback(done)
        return task

    async def close(self, grace: float = 1.0) -> None:
        """Let requests already sent finish (up to ``grace`` seconds), then cancel the rest."""
        self._closed = True
        self.foreign.closed = True
        inflight = list(self._inflight.values())
        if inflight:
            await asyncio.wait(inflight, timeout=grace)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background), timeout=1.0)

    # --- SubmitOrder ----------------------------------------------------------------------------------

    async def submit(self, request: OrderRequest, *, remaining_s: float | None, fair_share_key: str = "") -> Order:
        """Place an order once per client_order_id, in turn with other keys' orders (see the module docstring)."""
        check_fair_share_key(fair_share_key)
        cid = request.client_order_id
        running = self._inflight.get(cid)
        if running is not None:
            return self._same(await asyncio.shield(running), request)
        cached = self.journal.cached_order(cid)
        if cached is not None:
            return self._same(cached, request)
        deadline = self.exchange.deadline_after(remaining_s)
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
            ticket = await self.exchange.admit(RequestKind.NEW_ORDER, deadline, fair_share_key=fair_share_key)
        except (InvalidArgument, FailedPrecondition, ResourceExhausted):
            # A retry of an order journaled long ago (no longer cached) gets that order, even if the
            # market has moved since; only then is the database asked (the fast path never waits on it).
            existing = await self.journal.get_order(cid)
            if existing is not None:
                return self._same(existing, request)
            raise
        running = self._inflight.get(cid)
        if running is not None:  # the same id arrived twice at once: one placement only
            return self._same(await asyncio.shield(running), request)
        reply: asyncio.Future[Order] = asyncio.get_running_loop().create_future()
        task: asyncio.Task[Order] = self.spawn(
            self._answered(request, ticket, deadline, fair_share_key, reply), name=f"place-{cid}"
        )
        self._inflight[cid] = task
        task.add_done_callback(lambda _t: self._inflight.pop(cid, None))
        return self._same(await asyncio.shield(reply), request)

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

    def in_flight(self, client_order_id: str) -> bool:
        """Whether a submission of this order is running in this process (its outcome is not known yet)."""
        return client_order_id in self._inflight

    @staticmethod
    def _same(order: Order, request: OrderRequest) -> Order:
        if not order.request.same_order(request):
            raise Aborted(
                f"client_order_id {request.client_order_id!r} was already used for a different order",
                reason="CLIENT_ORDER_ID_REUSED",
            )
        return order

    async def _place(
        self,
        request: OrderRequest,
        ticket: Any,
        deadline: float | None,
        fair_share_key: str,
        reply: asyncio.Future[Order] | None = None,
    ) -> Order:
        cid = request.client_order_id
        timestamp = self.exchange.now_ms()
        fresh = Order.from_request(
            request, now_ms=self.clock(), request_time_ms=timestamp, recv_window_ms=self.exchange.recv_window_ms
        )
        order, created = await self.journal.transact(lambda tx: recording.insert_order(tx, fresh))
        if not created:
            return order

        async def retimestamp(ts: int) -> None:
            await self.journal.transact(lambda tx: recording.set_request_time(tx, cid, ts))

        try:
            snap = await self.exchange.new_order(
                request,
                timestamp_ms=timestamp,
                ticket=ticket,
                deadline=deadline,
                on_retimestamp=retimestamp,
                fair_share_key=fair_share_key,
            )
        except ExchangeError as err:
            if err.outcome is ExchangeOutcome.UNKNOWN or err.failure is Failure.DUPLICATE_ORDER:
                self.stats["unknown_outcome"] += 1
                log.warning(
                    "order outcome unknown; resolving it by query, never by resending",
                    extra={"client_order_id": cid, "error": err.describe()},
                )
                self._start_resolver(cid)
                return await self._current(cid, order)
            self.stats["rejected"] += 1
            reason = err.describe()
            rejected = await self.journal.transact(lambda tx: recording.reject(tx, cid, reason, now_ms=self.clock()))
            return rejected or order
        except ResourceExhausted as exc:
            # A resend (after -1021 or a failed connect) could not get capacity in time: not placed.
            reason = f"RATE_LIMIT: {exc.message}"
            rejected = await self.journal.transact(lambda tx: recording.reject(tx, cid, reason, now_ms=self.clock()))
            return rejected or order
        except BaseException:
            self._start_resolver(cid)
            raise
        return await self._apply(cid, snap, reply)

    async def _current(self, cid: str, fallback: Order) -> Order:
        return await self.journal.get_order(cid) or fallback

    def _covered(self, cid: str, snap: OrderSnapshot) -> recording.Applied | None:
        """``snap`` is already journaled (checked against the committed cache): nothing to write."""
        cached = self.journal.cached_order(cid)
        if cached is not None and recording.covers(cached, snap):
            return recording.Applied(cached)
        return None

    async def _apply(self, cid: str, snap: OrderSnapshot, reply: asyncio.Future[Order] | None = None) -> Order:
        """Journal a snapshot; fetch the order's trades (myTrades) when the journal lacks some.

        With ``reply`` (a placement's caller): an order the exchange accepted with nothing filled
        is answered at once, and its journal entry joins the next transaction (``record_delay_s``).
        A crash before that commit leaves the order journaled as sent, which the resolver settles
        by querying the exchange, as for any outcome not yet known.
        """
        covered = self._covered(cid, snap)
        if covered is not None:
            assert covered.order is not None
            return covered.order  # the user data stream got there first: nothing new to journal
        now = self.clock()
        defer: float | None = None
        if reply is not None and not reply.done():
            early = self._accepted_answer(cid, snap, now)
            if early is not None:
                reply.set_result(early)
                defer = self.record_delay_s
        # Checked again when the journal gets to it: a stream report queued just before may settle it.
        applied = await self.journal.transact(
            lambda tx: recording.apply_snapshot(tx, snap, None, now_ms=now, client_order_id=cid),
            settled=lambda: self._covered(cid, snap),
            defer=defer,
        )
        if applied.order is None:
            raise NotFound(f"no order with client_order_id {cid!r}", reason="ORDER_NOT_FOUND")
        if applied.complete:
            return applied.order
        try:
            trades = await self.exchange.order_trades(snap.symbol, snap.exchange_order_id)
        except (ExchangeError, DomainError) as exc:
            log.warning("cannot fetch trades yet", extra={"client_order_id": cid, "error": str(exc)})
            self.request_sync(cid, delay=1.0)
            return applied.order
        self.stats["trades_fetched"] += 1
        applied = await self.journal.transact(
            lambda tx: recording.apply_snapshot(tx, snap, trades, now_ms=self.clock(), client_order_id=cid)
        )
        if not applied.complete:
            self.request_sync(cid, delay=1.0)  # myTrades behind the order: look again shortly
        assert applied.order is not None
        return applied.order

    def _accepted_answer(self, cid: str, snap: OrderSnapshot, now: int) -> Order | None:
        """The order as journaling ``snap`` will leave it, if the exchange accepted it with nothing filled."""
        if snap.status is not OrderStatus.NEW or snap.fills or snap.executed_qty:
            return None
        journaled = self.journal.cached_order(cid)
        if journaled is None or journaled.reported_new or journaled.is_final:
            return None
        change = lifecycle.accepted(
            journaled, exchange_order_id=snap.exchange_order_id, time_ms=snap.time_ms, now_ms=now
        )
        return None if change.refused is not None else change.order

    # --- CancelOrder ----------------------------------------------------------------------------------

    async def cancel(self, client_order_id: str, *, remaining_s: float | None) -> Order:
        """Cancel an order; an order already final is returned as it is."""
        cid = check_client_order_id(client_order_id)
        placing = self._inflight.get(cid)
        if placing is not None:
            # Its placement was answered and is still being journaled (a few milliseconds): cancel
            # what the journal will hold, not the order as it was before it was sent.
            await asyncio.wait([placing], timeout=remaining_s)
        order = await self.journal.get_order(cid)
        if order is None:
            raise NotFound(f"no order with client_order_id {cid!r}", reason="ORDER_NOT_FOUND")
        if order.is_final:
            return order
        deadline = self.exchange.deadline_after(remaining_s)
        ticket = await self.exchange.admit(RequestKind.CANCEL, deadline)
        return await asyncio.shield(self.spawn(self._cancel(cid, ticket, deadline), name=f"cancel-{cid}"))

    async def _cancel(self, cid: str, ticket: Any, deadline: float | None) -> Order:
        order = await self.journal.get_order(cid)
        if order is not None and order.status is OrderStatus.UNKNOWN:
            # Remember the intent durably: the resolver cancels the order once it shows up, also
            # after a restart. An order known to be open needs no such note: the exchange's answer
            # (or a query) tells whether it was cancelled, and the caller retries otherwise.
            order = await self.journal.transact(lambda tx: recording.request_cancel(tx, cid, self.clock()))
            self._start_resolver(cid)
        if order is None:
            raise NotFound(f"no order with client_order_id {cid!r}", reason="ORDER_NOT_FOUND")
        if order.is_final:
            return order
        try:
            snap = await self.exchange.cancel_order(
                order.symbol, cid, order.exchange_order_id, ticket=ticket, deadline=deadline
            )
        except ExchangeError as err:
            if err.failure in (Failure.CANCEL_REJECTED, Failure.NO_SUCH_ORDER):
                if order.status is OrderStatus.UNKNOWN:
                    return await self._current(cid, order)
                # Not open at the exchange: it filled, expired or was canceled; learn which.
                try:
                    return (await self._sync(cid)).order or order
                except ExchangeError:
                    self.request_sync(cid, delay=0.5)
                    return await self._current(cid, order)
            if err.outcome is not ExchangeOutcome.DEFINITE or err.failure is Failure.RATE_LIMITED:
                # May or may not have happened: the sync finds out and cancels again if needed.
                self._cancel_wanted.add(cid)
                self.request_sync(cid, delay=0.5)
                return await self._current(cid, order)
            raise Unavailable(f"the exchange refused the cancel: {err.describe()}", reason="CANCEL_FAILED")
        return await self._apply(cid, snap)

    def _cancel_in_background(self, cid: str) -> None:
        if cid in self._cancels or self._closed:
            return
        self._cancels.add(cid)

        async def run() -> None:
            try:
                ticket = await self.exchange.admit(RequestKind.CANCEL, None)
                await self._cancel(cid, ticket, None)
            finally:
                self._cancels.discard(cid)

        self.spawn(run(), name=f"cancel-bg-{cid}")

    # --- GetOrder and syncing with the exchange ---------------------------------------------------------

    async def get(self, client_order_id: str, *, refresh: bool, remaining_s: float | None) -> Order:
        """The journaled order, or (refresh) the exchange's view of it, journaled first."""
        cid = check_client_order_id(client_order_id)
        order = await self.journal.get_order(cid)
        if order is None:
            raise NotFound(f"no order with client_order_id {cid!r}", reason="ORDER_NOT_FOUND")
        if not refresh:
            return order
        try:
            applied = await self._sync(cid, deadline=self.exchange.deadline_after(remaining_s))
        except ExchangeError as err:
            raise Unavailable(f"cannot query the exchange: {err.describe()}", reason="EXCHANGE_UNAVAILABLE")
        return applied.order or order

    def _past_window(self, order: Order) -> bool:
        """Whether the exchange can no longer accept the order's last request (timestamp + recvWindow passed)."""
        return self.exchange.now_ms() > order.request_time_ms + order.recv_window_ms + self.not_placed_margin_ms

    async def _sync(
        self, cid: str, *, deadline: float | None = None, missing_from_open: bool = False
    ) -> recording.Applied:
        """Query the order by origClientOrderId and journal what the exchange says.

        ``missing_from_open``: the account's open orders, listed just before, did not include it; if
        the exchange now also says it does not exist, although it had accepted it, it forgot it.
        """
        order = await self.journal.get_order(cid)
        if order is None:
            return recording.Applied(None)
        if cid in self._inflight:
            return recording.Applied(order, True)  # the submission in flight settles it
        try:
            snap = await self.exchange.query_order(order.symbol, cid, deadline=deadline)
        except ExchangeError as err:
            if err.failure is not Failure.NO_SUCH_ORDER:
                raise
            if order.status is OrderStatus.UNKNOWN and self._past_window(order):
                self.stats["proven_not_placed"] += 1
                reason = (
                    "NOT_PLACED: the exchange has no order with this client order id and its clock is past the "
                    "request's timestamp + recvWindow, so it can no longer accept it"
                )
                log.warning("unknown outcome resolved: never placed", extra={"client_order_id": cid})
                rejected = await self.journal.transact(
                    lambda tx: recording.reject(tx, cid, reason, now_ms=self.clock())
                )
                return recording.Applied(rejected)
            if missing_from_open and order.status in OPEN_STATUSES:
                return recording.Applied(await self._forgotten(cid, err))
            return recording.Applied(order, order.status is not OrderStatus.UNKNOWN)
        order = await self._apply(cid, snap)
        return recording.Applied(order, not recording.missing(order, snap.executed_qty))

    async def _forgotten(self, cid: str, err: ExchangeError) -> Order | None:
        """The exchange no longer knows an order it had accepted: record the anomaly, end the order EXPIRED."""
        self.stats["exchange_forgot_order"] += 1
        answer = err.describe()
        return await self.journal.transact(lambda tx: recording.forgotten(tx, cid, answer, now_ms=self.clock()))

    def anomalies_found(self, anomalies: list[Anomaly]) -> None:
        """Journal callback after a commit: each new anomaly is a security event."""
        for anomaly in anomalies:
            self.stats[f"anomaly_{anomaly.kind.value.lower()}"] += 1
            security_log.error(
                "exchange report contradicts the journal",
                extra={
                    "kind": anomaly.kind.value,
                    "symbol": anomaly.symbol,
                    "client_order_id": anomaly.client_order_id,
                    "trade_id": anomaly.trade_id,
                    "detail": anomaly.detail,
                },
            )

    def request_sync(self, cid: str, *, delay: float = 0.0) -> None:
        """Sync one order in the background (coalesced), retrying a few times until the journal agrees."""
        if cid in self._syncs or self._closed:
            return

        async def run() -> None:
            pause = max(delay, 0.0)
            try:
                for _ in range(6):
                    await asyncio.sleep(pause)
                    try:
                        applied = await self._sync(cid)
                    except (ExchangeError, DomainError) as exc:
                        log.info("order sync failed; will retry", extra={"client_order_id": cid, "error": str(exc)})
                        applied = recording.Applied(None, False)
                    order = applied.order
                    wanted = order is not None and (order.cancel_requested or cid in self._cancel_wanted)
                    if order is not None and wanted and order.status in OPEN_STATUSES:
                        self._cancel_in_background(cid)
                    elif order is not None and order.is_final:
                        self._cancel_wanted.discard(cid)
                    if applied.complete and order is not None:
                        return
                    pause = min(max(pause * 2, 0.5), 10.0)
            finally:
                self._syncs.pop(cid, None)

        self._syncs[cid] = self.spawn(run(), name=f"sync-{cid}")

    def _start_resolver(self, cid: str) -> None:
        if cid in self._resolvers or self._closed:
            return
        self._resolvers[cid] = self.spawn(self._resolve(cid), name=f"resolve-{cid}")

    async def _resolve(self, cid: str) -> None:
        """Query an order of unknown outcome until it shows up or is proven never placed."""
        delay = self.resolve_first_delay_s
        order: Order | None = None
        try:
            while not self._closed:
                await asyncio.sleep(delay)
                order = await self.journal.get_order(cid)
                if order is None or order.status is not OrderStatus.UNKNOWN:
                    break
                if cid in self._inflight:
                    continue
                try:
                    order = (await self._sync(cid)).order or order
                except (ExchangeError, DomainError) as exc:
                    log.info("resolving order: query failed", extra={"client_order_id": cid, "error": str(exc)})
                if order.status is not OrderStatus.UNKNOWN:
                    break
                delay = min(delay * 2, self.resolve_max_delay_s)
                until_proof = order.request_time_ms + order.recv_window_ms + self.not_placed_margin_ms
                left_ms = until_proof - self.exchange.now_ms()
                if left_ms > 0:
                    delay = min(delay, left_ms / 1000.0 + 0.05)
            if order is not None and order.status is not OrderStatus.UNKNOWN:
                self.stats["resolved"] += 1
                log.info("unknown outcome resolved", extra={"client_order_id": cid, "status": order.status.value})
                if order.cancel_requested and order.status in OPEN_STATUSES:
                    self._cancel_in_background(cid)
        finally:
            self._resolvers.pop(cid, None)

    # --- user data stream and reconciliation ------------------------------------------------------------

    def on_event(self, raw: dict[str, Any]) -> None:
        """Journal one user data stream event (queued in arrival order; never blocks the reader)."""
        event = self.events(raw)
        if event is None:
            return
        if self._known(event) is not None:
            return  # the order's response (or a reconciliation) already journaled it
        now = self.clock()
        # The order's answer is usually being journaled right now (the exchange sends both at once):
        # the check runs again once that has committed, so the report costs no transaction of its own.
        future = self.journal.submit(
            lambda tx: recording.apply_event(tx, event, now_ms=now), settled=lambda: self._known(event)
        )

        def done(f: Any) -> None:
            if f.cancelled():
                return
            if f.exception() is not None:
                log.error("journaling an execution failed", exc_info=f.exception())
                self.request_sync(event.client_order_id, delay=0.5)
                return
            applied: recording.Applied = f.result()
            if applied.order is None:
                return  # an order the gateway did not place: its foreign-order record was updated
            if not applied.complete:
                self.stats["stream_gaps"] += 1
                self.request_sync(event.client_order_id)

        future.add_done_callback(done)

    def _known(self, event: ExchangeEvent) -> recording.Applied | None:
        """``event`` is already journaled (checked against the committed cache): nothing to write."""
        cached = self.journal.cached_order(event.client_order_id)
        if cached is not None and recording.already_known(cached, event, self.journal.journaled_trade):
            return recording.Applied(cached)
        return None

    async def _ours_and_foreign(
        self, listed: list[OrderSnapshot]
    ) -> tuple[dict[str, OrderSnapshot], list[OrderSnapshot]]:
        """The exchange's open orders split into the journal's (by client order id) and foreign ones."""
        ours: dict[str, OrderSnapshot] = {}
        foreign: list[OrderSnapshot] = []
        for snap in listed:
            cid = snap.client_order_id
            mine = self.journal.cached_order(cid) or await self.journal.get_order(cid)
            if mine is not None and recording.belongs(mine, snap.symbol, snap.exchange_order_id):
                ours[cid] = snap
            else:
                foreign.append(snap)
        return ours, foreign

    async def _reconcile_order(self, stale: Order, open_snap: OrderSnapshot | None) -> None:
        """One journal order that is not final against the exchange's open order (None: not listed open)."""
        cid = stale.client_order_id
        order = await self.journal.get_order(cid) or stale
        if order.is_final:
            return
        try:
            if open_snap is not None:
                if (
                    order.status is OrderStatus.UNKNOWN
                    or not order.reported_new
                    or open_snap.executed_qty > order.executed_qty
                ):
                    order = await self._apply(cid, open_snap)
                if order.cancel_requested:
                    self._cancel_in_background(cid)
            elif order.status is OrderStatus.UNKNOWN:
                self._start_resolver(cid)
            else:
                await self._sync(cid, missing_from_open=True)
        except (ExchangeError, DomainError) as exc:
            log.warning("reconcile: order sync failed", extra={"client_order_id": cid, "error": str(exc)})
            self.request_sync(cid, delay=1.0)

    async def reconcile(self, why: str) -> None:
        """Bring every order that is not final in line with the exchange, and find foreign orders.

        One GET openOrders for every symbol (weight 80), at every reconciliation, whatever the
        journal holds. Journal orders it lists are compared with it (their missing trades fetched
        with myTrades); journal orders it does not list are queried one by one (weight 4), and an
        accepted one that the exchange says does not exist is ended as forgotten; orders of
        unknown outcome go to the resolver. Every other order it lists is foreign.
        """
        async with self._reconcile_lock:
            self.stats["reconciliations"] += 1
            pending = await self.journal.orders_not_final()
            try:
                listed = await self.exchange.open_orders()
            except (ExchangeError, DomainError) as exc:
                log.warning("reconcile: open orders failed", extra={"why": why, "error": str(exc)})
                for stale in pending:
                    if stale.client_order_id not in self._inflight:
                        self.request_sync(stale.client_order_id, delay=1.0)
                return
            ours, foreign = await self._ours_and_foreign(listed)
            if pending:
                log.info("reconciling", extra={"why": why, "orders": len(pending)})
            forgot_before = self.stats["exchange_forgot_order"]
            for stale in pending:
                if stale.client_order_id not in self._inflight:
                    await self._reconcile_order(stale, ours.get(stale.client_order_id))
            forgotten = self.stats["exchange_forgot_order"] - forgot_before
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
