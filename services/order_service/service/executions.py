"""Consumes the gateway's execution journal and applies each execution exactly once.

The stream is read from the persisted cursor (the sequence of the last execution applied). The
executions that are already waiting are applied together, in ONE transaction that also moves the
cursor: per execution, a trade whose fill id is already recorded is skipped (exactly once even if
the gateway were to deliver it twice), the order is updated through the transition table, the fill
is inserted, and the settlement (and, when the order ends, the release) is added to the outbox.
Either all of that commits, or none of it and the same executions come again after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging

from services.order_service.domain.lifecycle import DEFAULT_FEES, apply_execution
from services.order_service.domain.model import ExecutionReport, ExecutionType, FeeSchedule, Order
from services.order_service.service.core import Committed, Core, persist
from services.order_service.service.ports import GatewayPort, OrderTx

log = logging.getLogger("order_service.executions")


class StreamGap(Exception):
    """The gateway skipped a sequence number (its journal is promised gap-free)."""


class _End:
    """Marks the end of a stream session in the queue (with the error that ended it, if any)."""

    def __init__(self, error: BaseException | None):
        self.error = error


class ExecutionConsumer:
    """Follows StreamExecutions from the cursor and applies batches of executions."""

    def __init__(
        self,
        core: Core,
        gateway: GatewayPort,
        *,
        batch_size: int = 200,
        initial_backoff: float = 0.1,
        max_backoff: float = 5.0,
        fees: FeeSchedule = DEFAULT_FEES,
    ):
        self.fees = fees
        self.core = core
        self.gateway = gateway
        self.batch_size = batch_size
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.cursor = 0
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Consume forever, reconnecting with back-off."""
        backoff = self.initial_backoff
        while True:
            try:
                applied = await self._session()
                if applied:
                    backoff = self.initial_backoff
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
                log.warning("execution stream interrupted; reconnecting", extra={"error": error})
            self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(self.max_backoff, backoff * 2)

    async def _session(self) -> int:
        """One connection: read from the cursor until the stream ends or fails; return how many were applied."""
        self.cursor = await self.core.store.get_cursor()
        queue: asyncio.Queue[ExecutionReport | _End] = asyncio.Queue(maxsize=self.batch_size * 10)

        async def pump() -> None:
            try:
                async for report in self.gateway.stream_executions(self.cursor):
                    self.connected.set()
                    await queue.put(report)
                await queue.put(_End(None))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await queue.put(_End(exc))

        reader = asyncio.create_task(pump(), name="executions-pump")
        applied = 0
        try:
            while True:
                first = await queue.get()
                batch: list[ExecutionReport] = []
                end: _End | None = None
                item: ExecutionReport | _End = first
                while True:
                    if isinstance(item, _End):
                        end = item
                        break
                    batch.append(item)
                    if len(batch) >= self.batch_size or queue.empty():
                        break
                    item = queue.get_nowait()
                if batch:
                    applied += await self.apply(batch)
                if end is not None:
                    if end.error is not None:
                        raise end.error
                    return applied
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def apply(self, batch: list[ExecutionReport]) -> int:
        """Apply a batch in one transaction with the cursor; return how many were new."""
        committed = Committed()
        now = self.core.clock()

        def tx(t: OrderTx) -> int:
            cursor = t.get_cursor()
            orders: dict[str, Order | None] = {}
            count = 0
            for report in batch:
                if report.sequence <= cursor:
                    continue  # delivered again after a reconnect: already applied
                if report.sequence != cursor + 1:
                    raise StreamGap(f"expected sequence {cursor + 1}, got {report.sequence}")
                cursor = report.sequence
                count += 1
                order_id = report.client_order_id
                if order_id not in orders:
                    orders[order_id] = t.get_order(order_id)
                order = orders[order_id]
                if order is None:
                    # Not one of ours (another client of the exchange account); nothing to apply.
                    committed.anomalies.append((order_id, f"execution {report.sequence} for an unknown order"))
                    continue
                if report.execution_type is ExecutionType.TRADE and t.fill_exists(report.fill_id):
                    continue  # this trade is already applied
                outcome = apply_execution(order, report, now, self.fees)
                # Within the batch the order is written once per change; publish each version.
                persist(t, order, outcome, committed)
                orders[order_id] = outcome.order
            t.set_cursor(cursor)
            return count

        count = await self.core.store.write(tx)
        self.core.after_commit(committed)
        self.cursor = max(self.cursor, batch[-1].sequence)
        return count
