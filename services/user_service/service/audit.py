"""Writing the audit trail: events in their use case's transaction, or queued and aggregated.

Three ways an event reaches the ``audit_events`` table (append-only: triggers refuse UPDATE and
DELETE):

- in the transaction of the change it records (users, keys, status, deposits, withdrawals: see
  ``service.app``), so a change is never without its record nor a record without its change;
- ``record``: queued in memory and written by the background writer within ``flush_interval``
  seconds (a refused address; the other services' events through ``accept``);
- ``count``: the kinds an attacker can repeat at will, folded into one event per group and window
  (``domain.audit.Aggregator``), written when the window closes.

Queued and aggregated events are written in one transaction per flush, off the request path, so a
burst of failures costs no write per attempt. What is still in memory when the process dies is lost
(at most ``flush_interval`` seconds of queued events, and the open windows); ``stop`` writes it all.
Every event is ``sanitized`` first: nothing secret can be stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Iterable

from services.user_service.domain.audit import AGGREGATED, Aggregator, AuditEvent, sanitized
from services.user_service.service.ports import Transactions
from shared.timeutil import now_ms

log = logging.getLogger("user_service.audit")

DEFAULT_MAX_QUEUED = 10_000
"""Events waiting for the writer beyond this are dropped, oldest first, with a log line."""


class AuditTrail:
    """Queues, aggregates and writes audit events (see the module docstring)."""

    def __init__(
        self,
        transactions: Transactions,
        *,
        window_ms: int = 60_000,
        flush_interval: float = 1.0,
        max_queued: int = DEFAULT_MAX_QUEUED,
        max_groups: int = 10_000,
        clock: Callable[[], int] = now_ms,
    ):
        self._tx = transactions
        self._clock = clock
        self.flush_interval = flush_interval
        self.aggregator = Aggregator(window_ms, max_groups=max_groups)
        self._queue: deque[AuditEvent] = deque(maxlen=max_queued)
        self._dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def record(self, event: AuditEvent) -> None:
        """Queue one event for the background writer (an aggregated kind is counted instead)."""
        if event.kind in AGGREGATED:
            self.count(event)
            return
        if len(self._queue) == self._queue.maxlen:
            self._dropped += 1
        self._queue.append(sanitized(event))

    def count(self, event: AuditEvent) -> None:
        """Count one occurrence of an aggregated kind; written once its window closes."""
        self.aggregator.add(sanitized(event))

    async def accept(self, events: Iterable[AuditEvent]) -> int:
        """Take events another service sends: aggregated kinds are counted, the rest written now.

        Returns how many were accepted. A written event recorded before under the same source and
        source_event_id is not recorded again (a retry); counted ones are counted as they come.
        """
        accepted = 0
        direct: list[AuditEvent] = []
        for event in events:
            if event.kind in AGGREGATED:
                self.count(event)
                accepted += 1
            else:
                direct.append(sanitized(event))
        if direct:
            now = self._clock()
            accepted += await self._tx.write(lambda repo: repo.append_audit(direct, now))
        return accepted

    async def flush(self, *, everything: bool = True) -> int:
        """Write the queued events and the aggregated windows that are over (all of them: ``everything``).

        Returns how many events were written. If the write fails, the events are kept for the next flush.
        """
        async with self._lock:
            now = self._clock()
            events = list(self._queue)
            self._queue.clear()
            events += self.aggregator.drain() if everything else self.aggregator.closed(now)
            if self._dropped:
                log.error("audit events dropped: the writer fell behind", extra={"dropped": self._dropped})
                self._dropped = 0
            if not events:
                return 0
            try:
                return await self._tx.write(lambda repo: repo.append_audit(events, now))
            except BaseException:
                self._queue.extendleft(reversed([e for e in events if e.kind not in AGGREGATED]))
                for event in events:
                    if event.kind in AGGREGATED:
                        self.aggregator.add(event)
                raise

    def start(self) -> None:
        """Start the background writer."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-writer")

    async def stop(self) -> None:
        """Stop the background writer and write everything still in memory."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush(everything=True)
        except Exception:
            log.exception("audit events could not be written at shutdown")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush(everything=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("writing audit events failed; trying again", extra={"error": str(exc)})
