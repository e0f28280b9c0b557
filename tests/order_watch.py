"""A WatchOrders stream read in the background, for tests of the order service (in-process or real processes)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import grpc

from trading.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc


class Watch:
    """A running WatchOrders stream and what it has delivered so far."""

    def __init__(
        self,
        stub: order_service_pb2_grpc.OrderServiceStub,
        auth: Any,
        symbol: str = "",
        after_sequence: int | None = None,
    ):
        request = order_service_pb2.WatchOrdersRequest(symbol=symbol, after_sequence=after_sequence)
        self.call = stub.WatchOrders(request, metadata=auth)
        self.seen: list[order_pb2.Order] = []
        self.sequences: list[int] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Watch:
        await self.call.initial_metadata()  # the server subscribed before sending its headers
        self.task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        async for message in self.call:
            assert message.event_time.seconds > 0
            self.seen.append(message.order)
            self.sequences.append(message.sequence)

    async def until(self, predicate: Callable[[list[order_pb2.Order]], bool], timeout: float = 15.0) -> None:
        """Wait until ``predicate(seen)`` holds."""
        async with asyncio.timeout(timeout):
            while not predicate(self.seen):
                await asyncio.sleep(0.02)

    async def close(self) -> None:
        self.call.cancel()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                await self.task
