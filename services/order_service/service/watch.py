"""In-process publish/subscribe of order changes for WatchOrders, keyed by user.

A change is published after its transaction committed. Each watcher has a bounded queue: a
watcher that does not keep up is dropped (its stream ends with RESOURCE_EXHAUSTED) rather than
letting memory grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.order_service.domain.model import Order
from shared.errors import ResourceExhausted, Unavailable

_CLOSED = object()
_OVERFLOW = object()


class Subscription:
    """One WatchOrders stream: the caller's order changes, optionally for one symbol."""

    def __init__(self, hub: WatchHub, user_id: str, symbol: str, maxsize: int):
        self.hub = hub
        self.user_id = user_id
        self.symbol = symbol
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize + 1)
        self.maxsize = maxsize
        self.dropped = False

    def offer(self, order: Order) -> None:
        """Queue a change, or drop the watcher if it is too far behind."""
        if self.dropped:
            return
        if self.queue.qsize() >= self.maxsize:
            self.dropped = True
            self.queue.put_nowait(_OVERFLOW)
            self.hub.unsubscribe(self)
            return
        self.queue.put_nowait(order)

    def close(self) -> None:
        """End the stream (service shutting down)."""
        if not self.dropped:
            self.dropped = True
            self.queue.put_nowait(_CLOSED)

    async def stream(self) -> AsyncIterator[Order]:
        """Yield the changes as they come; end with RESOURCE_EXHAUSTED if dropped."""
        try:
            while True:
                item = await self.queue.get()
                if item is _OVERFLOW:
                    raise ResourceExhausted(
                        "the watcher fell too far behind and was dropped; reconnect and re-read with ListOrders",
                        reason="WATCHER_TOO_SLOW",
                    )
                if item is _CLOSED:
                    raise Unavailable("the order service is shutting down", reason="SHUTTING_DOWN")
                assert isinstance(item, Order)
                yield item
        finally:
            self.hub.unsubscribe(self)


class WatchHub:
    """Routes committed order changes to the watchers of the order's user."""

    def __init__(self, queue_size: int = 1000):
        self.queue_size = queue_size
        self._by_user: dict[str, set[Subscription]] = {}

    def subscribe(self, user_id: str, symbol: str = "") -> Subscription:
        """Start watching a user's orders."""
        subscription = Subscription(self, user_id, symbol, self.queue_size)
        self._by_user.setdefault(user_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop delivering to a watcher."""
        watchers = self._by_user.get(subscription.user_id)
        if watchers is None:
            return
        watchers.discard(subscription)
        if not watchers:
            del self._by_user[subscription.user_id]

    def publish(self, order: Order) -> None:
        """Deliver a committed change to the order's user's watchers."""
        watchers = self._by_user.get(order.user_id)
        if not watchers:
            return
        for subscription in list(watchers):
            if not subscription.symbol or subscription.symbol == order.symbol:
                subscription.offer(order)

    def watcher_count(self) -> int:
        """How many streams are open."""
        return sum(len(s) for s in self._by_user.values())

    def close(self) -> None:
        """End every stream."""
        for watchers in list(self._by_user.values()):
            for subscription in list(watchers):
                subscription.close()
        self._by_user.clear()
