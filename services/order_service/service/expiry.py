"""Expiry: an order whose expire_time passes is cancelled at the exchange and ends EXPIRED.

The expire time is stored with the order, so a restart re-arms every active order's timer (and an
order that expired while the service was down is cancelled at once). The intent is persisted as
``expire_requested`` before the cancel is sent, so the CANCELED that comes back, from the answer
or from the stream, even after a restart, turns into EXPIRED rather than CANCELLED.
"""

from __future__ import annotations

import asyncio
import heapq
import logging

from services.order_service.domain.lifecycle import request_expiry
from services.order_service.domain.model import Outcome
from services.order_service.domain.states import State
from services.order_service.service.cancellation import send_cancel
from services.order_service.service.core import Core
from services.order_service.service.ports import GatewayPort

log = logging.getLogger("order_service.expiry")


class ExpiryScheduler:
    """A timer heap of (expire time, order id) and the task that fires it."""

    def __init__(
        self,
        core: Core,
        gateway: GatewayPort,
        *,
        retry_delay: float = 2.0,
        timeout: float = 5.0,
        drain_timeout: float = 2.0,
    ):
        self.core = core
        self.gateway = gateway
        self.retry_delay = retry_delay
        self.timeout = timeout
        self.drain_timeout = drain_timeout
        self._heap: list[tuple[int, str]] = []
        self._wake = asyncio.Event()
        self._running: dict[str, asyncio.Task[None]] = {}

    def arm(self, order_id: str, expire_time_ms: int) -> None:
        """Expire the order at ``expire_time_ms`` (Unix ms) unless it ends before."""
        heapq.heappush(self._heap, (expire_time_ms, order_id))
        self._wake.set()

    async def run(self) -> None:
        """Fire due timers until cancelled."""
        while True:
            if not self._heap:
                await self._wake.wait()
                self._wake.clear()
                continue
            due_ms, order_id = self._heap[0]
            delay = (due_ms - self.core.clock()) / 1000
            if delay > 0:
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
                # arrives as the event is set, and this loop would then never stop.
                try:
                    async with asyncio.timeout(min(delay, 60.0)):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                self._wake.clear()
                continue
            heapq.heappop(self._heap)
            if order_id in self._running:
                continue
            task = asyncio.create_task(self._expire(order_id), name=f"expire-{order_id}")
            self._running[order_id] = task
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        order_id = task.get_name().removeprefix("expire-")
        if self._running.get(order_id) is task:
            del self._running[order_id]

    async def _expire(self, order_id: str) -> None:
        try:
            order = await self.core.store.get_order(order_id)
            if order is None or order.is_final:
                return
            if order.state is State.PLACING:
                self._retry(order_id)  # the placement finishes first
                return
            if not order.expire_requested and not order.cancel_requested:
                await self.core.mutate(order_id, lambda o: Outcome(request_expiry(o, self.core.clock())))
            order = await send_cancel(self.core, self.gateway, order_id, self.timeout, self.drain_timeout)
            if not order.is_final:
                # The end is on its way through the stream, or the cancel did not get through: check again.
                self._retry(order_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("could not expire order; will retry", extra={"order_id": order_id, "error": str(exc)})
            self._retry(order_id)

    def _retry(self, order_id: str) -> None:
        self.arm(order_id, self.core.clock() + int(self.retry_delay * 1000))

    async def stop(self) -> None:
        """Cancel running expiries (their orders are re-armed at the next start)."""
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
