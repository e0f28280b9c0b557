"""What the order use cases share: the journal, the exchange, the clock, their counters and their tasks."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from services.exchange_gateway.domain.errors import ExchangeError
from services.exchange_gateway.domain.model import Order
from services.exchange_gateway.service.ports import Exchange, Journal
from shared.errors import DomainError

log = logging.getLogger("exchange_gateway.orders")


class Tasks:
    """The order use cases' background tasks, among them the placements in flight.

    A placement runs in its own task so that a caller that goes away cannot leave the journal
    behind the exchange; while it runs, nothing else queries or cancels that order (the
    placement's own answer settles it).
    """

    def __init__(self) -> None:
        self.placing: dict[str, asyncio.Task[Order]] = {}
        self.closed = False
        self._background: set[asyncio.Task[Any]] = set()

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

    def in_flight(self, client_order_id: str) -> bool:
        """Whether a submission of this order is running in this process (its outcome is not known yet)."""
        return client_order_id in self.placing

    async def close(self, grace: float) -> None:
        """Let requests already sent finish (up to ``grace`` seconds), then cancel the rest."""
        self.closed = True
        inflight = list(self.placing.values())
        if inflight:
            await asyncio.wait(inflight, timeout=grace)
        for task in list(self._background):
            task.cancel()
        if self._background:
            await asyncio.wait(list(self._background), timeout=1.0)


@dataclass
class OrderContext:
    """The ports and the state every order use case works with."""

    journal: Journal
    exchange: Exchange
    clock: Callable[[], int]
    tasks: Tasks = field(default_factory=Tasks)
    stats: Counter[str] = field(default_factory=Counter)
    """Counters by event (unknown_outcome, rejected, resolved, ...), exported as metrics."""
