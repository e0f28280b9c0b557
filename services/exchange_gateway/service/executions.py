"""StreamExecutions: replay the journal after a sequence, then follow new executions live.

The journal publishes each committed batch here in sequence order, after the commit, so every
sequence up to ``last`` is in the database. The hub keeps the most recent executions in memory
(``buffer_size``, about half a kilobyte each; a stream further behind reads pages from the database);
a stream reads the next sequence from memory when it is there and from the database otherwise,
and asks for exactly ``cursor + 1`` every time. The hand-over from replay to live is therefore
not a special case: there is nothing to miss and nothing to see twice.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable

from services.exchange_gateway.domain.model import Execution

ReadAfter = Callable[[int, int], Awaitable[list[Execution]]]


class ExecutionHub:
    """Fan-out of the execution journal to any number of resumable streams."""

    def __init__(self, read_after: ReadAfter, *, last_sequence: int = 0, buffer_size: int = 4_096, page: int = 1000):
        self.read_after = read_after
        self.last = last_sequence
        self.buffer: deque[Execution] = deque(maxlen=buffer_size)
        self.page = page
        self._changed: asyncio.Future[None] | None = None
        self._closed = False

    def publish(self, executions: list[Execution]) -> None:
        """Add committed executions (in sequence order, continuing from ``last``) and wake the streams."""
        for execution in executions:
            if execution.sequence != self.last + 1:
                raise RuntimeError(f"execution sequence {execution.sequence} does not follow {self.last}")
            self.buffer.append(execution)
            self.last = execution.sequence
        self._wake()

    def close(self) -> None:
        """End every stream."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._changed = None

    async def _wait(self) -> None:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._changed)

    async def _next_page(self, cursor: int) -> list[Execution]:
        first = self.buffer[0].sequence if self.buffer else self.last + 1
        if cursor + 1 >= first:
            start = cursor + 1 - first
            return list(itertools.islice(self.buffer, start, start + self.page))
        return await self.read_after(cursor, self.page)

    async def stream(self, after: int) -> AsyncIterator[Execution]:
        """Yield sequence after+1, after+2, ... with no gap and no duplicate, forever (until closed)."""
        cursor = max(0, after)
        while not self._closed:
            if cursor >= self.last:
                await self._wait()
                continue
            page = await self._next_page(cursor)
            if not page:
                await self._wait()
                continue
            for execution in page:
                if execution.sequence != cursor + 1:
                    raise RuntimeError(f"journal gap: expected {cursor + 1}, got {execution.sequence}")
                yield execution
                cursor = execution.sequence
