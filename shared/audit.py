"""Security events bound for the user service's audit trail, and the queue that delivers them.

The order service and the gateway see security-relevant things that the user service keeps in its
append-only audit trail (foreign orders, a client-money shortfall, the exchange's rate-limit bans,
admin actions, permission denials). They build an ``AuditRecord`` and hand it to an ``AuditQueue``,
which never blocks nor fails the caller: a background task sends what is queued in batches through
``send`` (each service's client adapter turns a batch into one RecordAuditEvents call), retrying
with back-off while the user service does not take them. Every record carries an id of its own
(``record_id``), so a batch sent again after a lost answer is recorded once.

The queue is bounded and in memory: if the user service stays away long enough for it to fill,
the oldest records are dropped (and the drop is logged); records not delivered when the process
stops are lost. The facts themselves stay in the sender's own records (its journal, the
reconciliation report, its security log).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from shared.ids import new_id

log = logging.getLogger("shared.audit")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One security event for the audit trail. Never put a secret in it: at most a key id.

    ``kind`` is the proto's AuditEventKind without its prefix (``FOREIGN_ORDER``); ``actor`` is
    "admin", "service", "user" or ""; ``peer`` the client's address as the servicer saw it.
    """

    kind: str
    event_ms: int
    actor: str = ""
    actor_key_id: str = ""
    user_id: str = ""
    key_id: str = ""
    peer: str = ""
    rpc: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    record_id: str = field(default_factory=lambda: new_id("aud"))


Send = Callable[[list[AuditRecord]], Awaitable[None]]


class AuditQueue:
    """Delivers audit records in the background (see the module docstring)."""

    def __init__(
        self,
        send: Send,
        *,
        max_queued: int = 10_000,
        batch_size: int = 200,
        first_backoff: float = 0.2,
        max_backoff: float = 10.0,
    ):
        self._send = send
        self.max_queued = max_queued
        self.batch_size = batch_size
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self._queue: deque[AuditRecord] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._queue)

    def record(self, record: AuditRecord) -> None:
        """Queue one record for delivery; never blocks, never raises."""
        if len(self._queue) >= self.max_queued:
            self._queue.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("audit records dropped: the user service has not taken them", extra={"dropped": self.dropped})
        self._queue.append(record)
        self._wake.set()

    def start(self) -> None:
        """Start delivering in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-queue")

    async def flush(self) -> None:
        """Send everything queued now (one try per batch); raise what ``send`` raised, keeping the records."""
        while self._queue:
            await self._send_batch()

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop the background task, then try for up to ``timeout`` seconds to deliver what is left."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if not self._queue:
            return
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except Exception as exc:
            log.warning(
                "audit records not delivered at shutdown", extra={"records": len(self._queue), "error": str(exc)}
            )

    async def _send_batch(self) -> None:
        batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
        try:
            await self._send(batch)
        except BaseException:
            # Back at the front, in order; the bound still holds (newer records may be dropped first).
            room = max(0, self.max_queued - len(self._queue))
            self._queue.extendleft(reversed(batch[:room]))
            self.dropped += len(batch) - len(batch[:room])
            raise
        self.sent += len(batch)

    async def _run(self) -> None:
        delay = self.first_backoff
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                try:
                    await self._send_batch()
                    delay = self.first_backoff
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning(
                        "sending audit records failed; trying again",
                        extra={"records": len(self._queue), "retry_in_s": delay, "error": str(exc)},
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.max_backoff)
