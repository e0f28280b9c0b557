"""Performs the side effects owed to the user service, from the outbox, in order per order.

An effect (SettleTrade, ReleaseFunds) is written to the outbox in the same transaction as the
change that causes it, so it cannot be lost; this dispatcher performs it with its idempotency key
(trade id, release id) and then deletes it, so performing it again after a crash changes nothing.

Per order the effects run strictly in id order (a release never overtakes the settlements of the
same order: it must return only what the trades left); different orders run concurrently.

A failing effect is retried with back-off. While the user service is unavailable (UNAVAILABLE,
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED: "try again") it is retried for as long as that lasts. Any
other failure is definite (the user service refused it: a missing reservation, a conflicting key, a
bug): after ``max_attempts`` tries the entry is **parked** with its reason, durably, and logged at
ERROR. A parked entry, and the later entries of the same order behind it, wait for an operator
(``retry``, the admin RPC RetryParkedEffect) once the cause is fixed; other orders, the same user's
included, are not held up. Nothing retries forever in silence.

One call for two entries: when an order's next entry is a SettleTrade and the one after it is the
order's release of everything left (ReleaseFunds with amount None, what an order that fills
completely owes after its last trade), both go out as ONE SettleTrade call carrying the release id.
The user service books the trade and then the release in one transaction, each under its own
idempotency key, so the order of effects is unchanged and a replay of either entry, alone or
combined, changes nothing. Both entries count as performed only when that call succeeded; until
then both stay at the head of the queue. Any other sequence is performed one entry per call.

Deleting is coalesced: a completion wakes the flusher, which waits ``flush_delay`` before deleting
whatever is done by then, so the entries of many orders share one delete transaction instead of
one each. ``stop()`` and ``idle()`` flush everything without waiting. This is safe because an entry
that was performed but not yet deleted is only ever performed again after a crash (the queue holds
each entry once, and a restart reloads what was not deleted), and the idempotency keys (trade id,
release id) make that second performance change nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable

from services.order_service.domain.model import Effect, ReleaseFunds, SettleTrade
from services.order_service.service.ports import OrderStore, OutboxEntry, ParkedEffect, UserPort
from services.order_service.service.telemetry import OrderTelemetry
from shared.errors import DeadlineExceeded, DomainError, NotFound, ResourceExhausted, Unavailable
from shared.timeutil import now_ms

log = logging.getLogger("order_service.outbox")

# Failures that say "not done, try again later": retried for as long as they last.
TRANSIENT = (Unavailable, DeadlineExceeded, ResourceExhausted)


class Parked(Exception):
    """An entry failed definitely ``max_attempts`` times and was parked."""


class Outbox:
    """Runs outbox entries: one task per order with pending entries, a batched delete of the done ones."""

    def __init__(
        self,
        store: OrderStore,
        users: UserPort,
        *,
        call_timeout: float = 5.0,
        max_backoff: float = 30.0,
        concurrency: int = 64,
        flush_delay: float = 0.05,
        max_attempts: int = 5,
        first_backoff: float = 0.05,
        telemetry: OrderTelemetry | None = None,
    ):
        self.store = store
        self.users = users
        self.telemetry = telemetry if telemetry is not None else OrderTelemetry()
        self._queued_at: dict[int, float] = {}  # entry id -> when this process queued it (monotonic)
        self.call_timeout = call_timeout
        self.max_backoff = max_backoff
        self.flush_delay = flush_delay
        self.max_attempts = max_attempts
        self.first_backoff = first_backoff
        self._parked: set[str] = set()  # orders whose head entry is parked
        self._slots = asyncio.Semaphore(concurrency)
        self._queues: dict[str, deque[OutboxEntry]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._done: list[int] = []
        self._known: set[int] = set()
        self._flush_wanted = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Load what a previous run left pending and start performing it (parked entries stay parked)."""
        self._parked.update(p.entry.effect.order_id for p in await self.store.parked_effects())
        self.enqueue(await self.store.pending_effects())
        self._flusher = asyncio.create_task(self._flush_loop(), name="outbox-flush")

    async def parked(self) -> list[ParkedEffect]:
        """The parked entries, oldest first."""
        return await self.store.parked_effects()

    async def retry(self, entry_id: int) -> ParkedEffect:
        """Take a parked entry off the list and perform it (and its order's later entries) again."""
        parked = {p.entry.id: p for p in await self.store.parked_effects()}
        found = parked.get(entry_id)
        if found is None or not await self.store.unpark_effect(entry_id):
            raise NotFound(
                f"no parked effect {entry_id}", reason="PARKED_EFFECT_NOT_FOUND", metadata={"entry_id": str(entry_id)}
            )
        order_id = found.entry.effect.order_id
        log.warning("parked effect retried by an operator", extra={"entry": entry_id, "order_id": order_id})
        self._parked.discard(order_id)
        self.enqueue([found.entry])  # already queued unless the entry was loaded before it was parked
        self._start(order_id)
        return found

    def enqueue(self, entries: Iterable[OutboxEntry]) -> None:
        """Perform these committed entries (in id order within each order)."""
        for entry in entries:
            if entry.id in self._known:
                continue
            self._known.add(entry.id)
            self._queued_at.setdefault(entry.id, time.monotonic())
            order_id = entry.effect.order_id
            queue = self._queues.get(order_id)
            if queue is None:
                queue = self._queues[order_id] = deque()
            queue.append(entry)
            self._start(order_id)

    def _start(self, order_id: str) -> None:
        idle = order_id not in self._tasks and order_id not in self._parked
        if order_id in self._queues and idle and not self._stopping:
            self._tasks[order_id] = asyncio.create_task(self._run(order_id), name=f"outbox-{order_id}")

    def queued_effects(self) -> list[Effect]:
        """The effects not yet performed (parked ones and those held behind them included)."""
        return [entry.effect for queue in list(self._queues.values()) for entry in list(queue)]

    def oldest_age(self, now: float) -> float:
        """Seconds the oldest entry still to perform has waited since it was queued (0 when none).

        Orders held by a parked entry are left out: ``parked_count`` reports those.
        """
        queued = [
            self._queued_at.get(queue[0].id, now)
            for order_id, queue in list(self._queues.items())
            if queue and order_id not in self._parked
        ]
        return max(0.0, now - min(queued)) if queued else 0.0

    def parked_count(self) -> int:
        """Entries parked for an operator (one per order at most: the order's later entries wait behind it)."""
        return len(self._parked)

    def pending(self, order_id: str | None = None) -> int:
        """Entries not yet performed (of one order, or all)."""
        if order_id is not None:
            return len(self._queues.get(order_id, ()))
        return sum(len(q) for q in self._queues.values())

    async def drain(self, order_id: str, timeout: float) -> bool:
        """Wait until the order's pending entries are performed (at most ``timeout``); True if they were."""
        task = self._tasks.get(order_id)
        if task is None:
            return order_id not in self._queues
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)
        except TimeoutError:
            return False
        return order_id not in self._queues

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until nothing is pending (tests)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while self._tasks:
            tasks = list(self._tasks.values())
            await asyncio.wait(tasks, timeout=max(0.0, end - loop.time()))
            if loop.time() >= end:
                raise TimeoutError(f"outbox still has {self.pending()} pending entries")
        await self.flush()

    async def _run(self, order_id: str) -> None:
        queue = self._queues[order_id]
        try:
            while queue:
                step = self._next_step(queue)
                try:
                    await self._perform_with_retry(step)
                except Parked:
                    return  # this order's entries wait for an operator; the others go on
                for entry in step:
                    queue.popleft()
                    self._known.discard(entry.id)
                    self._queued_at.pop(entry.id, None)
                    self._done.append(entry.id)
                    if isinstance(entry.effect, SettleTrade):
                        self.telemetry.settled(entry.effect.trade_time_ms, now_ms())
                self._flush_wanted.set()
        finally:
            if not queue:
                self._queues.pop(order_id, None)
            self._tasks.pop(order_id, None)

    @staticmethod
    def _next_step(queue: deque[OutboxEntry]) -> tuple[OutboxEntry, ...]:
        """The head entry, or the head SettleTrade with the order's final release right behind it."""
        head = queue[0]
        if isinstance(head.effect, SettleTrade) and len(queue) > 1:
            following = queue[1].effect
            if (
                isinstance(following, ReleaseFunds)
                and following.amount is None
                and following.order_id == head.effect.order_id
            ):
                return head, queue[1]
        return (head,)

    async def _perform_with_retry(self, step: tuple[OutboxEntry, ...]) -> None:
        entry = step[0]
        attempt = 0
        definite = 0
        while True:
            try:
                async with self._slots:
                    if len(step) == 1:
                        await self.perform(entry.effect)
                    else:
                        # _next_step paired a settlement with its order's release of everything left.
                        trade, release = step[0].effect, step[1].effect
                        assert isinstance(trade, SettleTrade) and isinstance(release, ReleaseFunds)
                        await self.users.settle_trade(trade, self.call_timeout, release_id=release.release_id)
                if attempt:
                    log.info(
                        "outbox entry performed after retries",
                        extra={"entry": entry.id, "entries": [e.id for e in step], "attempts": attempt + 1},
                    )
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                attempt += 1
                if not isinstance(exc, TRANSIENT):
                    definite += 1
                    if definite >= self.max_attempts:
                        await self._park(step, exc, attempt)
                        raise Parked() from exc
                delay = min(self.max_backoff, self.first_backoff * 2 ** min(attempt, 12))
                level = logging.WARNING if attempt < 5 else logging.ERROR
                log.log(
                    level,
                    "outbox entry failed; retrying",
                    extra={
                        "entry": entry.id,
                        "entries": [e.id for e in step],
                        "order_id": entry.effect.order_id,
                        "effect": "+".join(type(e.effect).__name__ for e in step),
                        "attempt": attempt,
                        "retry_in": delay,
                        "error": f"{type(exc).__name__}: {exc}",
                    },
                )
                await asyncio.sleep(delay)

    async def _park(self, step: tuple[OutboxEntry, ...], exc: BaseException, attempts: int) -> None:
        """Record the head entry as parked (retrying the write until it is durable)."""
        entry = step[0]
        order_id = entry.effect.order_id
        reason = exc.message if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"
        if isinstance(exc, DomainError) and exc.reason:
            reason = f"{exc.reason}: {reason}"
        while True:
            try:
                await self.store.park_effect(entry.id, reason, attempts, now_ms())
                break
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not park an outbox entry; trying again", extra={"entry": entry.id})
                await asyncio.sleep(1.0)
        self._parked.add(order_id)
        log.error(
            "outbox entry parked: it needs an operator (ListParkedEffects, RetryParkedEffect)",
            extra={
                "entry": entry.id,
                "order_id": order_id,
                "effect": type(entry.effect).__name__,
                "attempts": attempts,
                "reason": reason,
            },
        )

    async def perform(self, effect: Effect) -> None:
        """Call the user service for one effect (idempotent on its key)."""
        if isinstance(effect, SettleTrade):
            await self.users.settle_trade(effect, self.call_timeout)
        elif isinstance(effect, ReleaseFunds):
            await self.users.release_funds(effect.order_id, effect.release_id, effect.amount, self.call_timeout)
        else:  # pragma: no cover - the Effect union is closed
            raise TypeError(f"unknown effect {effect!r}")

    async def flush(self) -> None:
        """Delete the performed entries from the outbox (one transaction for all of them)."""
        async with self._flush_lock:  # a caller of flush() also waits for a flush in progress
            if not self._done:
                return
            done, self._done = self._done, []
            try:
                await self.store.delete_effects(done)
            except BaseException:
                # Performed but not yet forgotten: they would be performed again after a restart,
                # which the idempotency keys make harmless. Keep them for the next flush.
                self._done.extend(done)
                raise

    async def _flush_loop(self) -> None:
        while True:
            await self._flush_wanted.wait()
            if self.flush_delay > 0:
                await asyncio.sleep(self.flush_delay)  # let more completions join this delete
            self._flush_wanted.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not delete performed outbox entries; will retry")
                await asyncio.sleep(1.0)
                self._flush_wanted.set()

    async def stop(self, grace: float = 1.0) -> None:
        """Give running entries ``grace`` seconds, cancel the rest (they stay in the outbox), flush."""
        self._stopping = True
        tasks = list(self._tasks.values())
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for task in list(self._tasks.values()):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        try:
            await self.flush()
        except Exception:
            log.exception("could not delete performed outbox entries at shutdown; they will be replayed")
