"""The queue that carries the order service's and the gateway's security events to the audit trail."""

from __future__ import annotations

import asyncio

from shared.audit import AuditQueue, AuditRecord
from shared.errors import Unavailable


class FlakyTrail:
    """Refuses the first ``failures`` sends, then keeps every batch it is given."""

    def __init__(self, failures: int = 0):
        self.failures = failures
        self.batches: list[list[AuditRecord]] = []
        self.arrived = asyncio.Event()

    async def send(self, batch: list[AuditRecord]) -> None:
        if self.failures:
            self.failures -= 1
            raise Unavailable("user service: connection refused")
        self.batches.append(batch)
        self.arrived.set()


async def test_records_are_delivered_in_order_once_the_user_service_answers_with_their_ids_kept() -> None:
    trail = FlakyTrail(failures=2)
    queue = AuditQueue(trail.send, first_backoff=0.01)
    records = [AuditRecord("FOREIGN_ORDER", i, details={"n": str(i)}) for i in range(5)]
    queue.start()
    for record in records:
        queue.record(record)
    await asyncio.wait_for(trail.arrived.wait(), timeout=5)
    while sum(len(b) for b in trail.batches) < 5:
        await asyncio.sleep(0.01)
    await queue.stop()
    delivered = [r for batch in trail.batches for r in batch]
    assert delivered == records
    assert len({r.record_id for r in delivered}) == 5  # a retried batch keeps its ids: recorded once
    assert queue.sent == 5 and len(queue) == 0


def test_recording_never_blocks_and_a_full_queue_drops_the_oldest() -> None:
    queue = AuditQueue(FlakyTrail().send, max_queued=3)
    for i in range(5):
        queue.record(AuditRecord("EXCHANGE_RATE_LIMITED", i))
    assert len(queue) == 3 and queue.dropped == 2
    assert [r.event_ms for r in queue._queue] == [2, 3, 4]


async def test_a_failed_flush_keeps_the_records_for_the_next_try() -> None:
    trail = FlakyTrail(failures=1)
    queue = AuditQueue(trail.send, batch_size=2)
    for i in range(3):
        queue.record(AuditRecord("ADMIN_ACTION", i))
    try:
        await queue.flush()
    except Unavailable:
        pass
    assert [r.event_ms for r in queue._queue] == [0, 1, 2]
    await queue.flush()
    assert [[r.event_ms for r in b] for b in trail.batches] == [[0, 1], [2]]
