"""WatchOrders: every update a user can see, numbered per user, replayable from the database.

Each committed change that a user can see is recorded in the same transaction with the user's next
sequence number (``OrderTx.add_update``) and then published here, in-process, to that user's
watchers. A watcher that resumes with ``after_sequence`` subscribes to the live updates FIRST, then
replays the recorded ones after its sequence, then goes on with the live ones, skipping those the
replay already delivered: nothing is missed or doubled at the seam, and because the numbers are in
the database, also across a restart.

Each watcher has a bounded queue: one that does not keep up is ended with RESOURCE_EXHAUSTED that
names the last sequence it received, so it resumes from there instead of losing updates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from services.order_service.domain.model import Order
from services.order_service.service.ports import OrderStore
from shared.errors import InvalidArgument, OutOfRange, ResourceExhausted, Unavailable

_CLOSED = object()
_OVERFLOW = object()
REPLAY_PAGE = 500


class Subscription:
    """One WatchOrders stream: the caller's order updates, optionally for one symbol."""

    def __init__(self, hub: WatchHub, user_id: str, symbol: str, maxsize: int):
        self.hub = hub
        self.user_id = user_id
        self.symbol = symbol
        self.queue: asyncio.Queue[object] = asyncio.Queue(maxsize + 1)
        self.maxsize = maxsize
        self.dropped = False

    def offer(self, order: Order, sequence: int) -> None:
        """Queue an update, or drop the watcher if it is too far behind."""
        if self.dropped:
            return
        if self.queue.qsize() >= self.maxsize:
            self.dropped = True
            self.queue.put_nowait(_OVERFLOW)
            self.hub.unsubscribe(self)
            return
        self.queue.put_nowait((order, sequence))

    def close(self) -> None:
        """End the stream (service shutting down)."""
        if not self.dropped:
            self.dropped = True
            self.queue.put_nowait(_CLOSED)

    async def stream(self) -> AsyncIterator[tuple[Order, int]]:
        """Yield (order, sequence) as updates come; end with RESOURCE_EXHAUSTED if dropped."""
        try:
            while True:
                item = await self.queue.get()
                if item is _OVERFLOW:
                    raise ResourceExhausted("the watcher fell too far behind", reason="WATCHER_TOO_SLOW")
                if item is _CLOSED:
                    raise Unavailable("the order service is shutting down", reason="SHUTTING_DOWN")
                assert isinstance(item, tuple)
                yield item
        finally:
            self.hub.unsubscribe(self)


class WatchHub:
    """Routes committed order updates to the watchers of the order's user."""

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

    def publish(self, order: Order, sequence: int) -> None:
        """Deliver a committed update (with its user sequence) to the order's user's watchers."""
        watchers = self._by_user.get(order.user_id)
        if not watchers:
            return
        for subscription in list(watchers):
            if not subscription.symbol or subscription.symbol == order.symbol:
                subscription.offer(order, sequence)

    def close(self) -> None:
        """End every stream."""
        for watchers in list(self._by_user.values()):
            for subscription in list(watchers):
                subscription.close()
        self._by_user.clear()


class OrderFeed:
    """The WatchOrders use case: live updates, after a replay from the database when resuming."""

    def __init__(self, hub: WatchHub, store: OrderStore):
        self.hub = hub
        self.store = store

    def subscribe(self, user_id: str, symbol: str) -> Subscription:
        """Start buffering the user's live updates (before any replay, so that none falls in between)."""
        return self.hub.subscribe(user_id, symbol)

    async def follow(self, subscription: Subscription, after_sequence: int | None) -> AsyncIterator[tuple[Order, int]]:
        """Replay what came after ``after_sequence`` (when given), then the live updates, each once."""
        last = after_sequence
        try:
            if after_sequence is not None:
                if after_sequence < 0:
                    raise InvalidArgument("after_sequence", "must be 0 or more")
                first = await self.store.first_kept_update(subscription.user_id)
                if first is not None and first > after_sequence + 1:
                    raise OutOfRange(
                        f"updates after sequence {after_sequence} are no longer kept (the oldest is {first}); "
                        "re-read your orders with ListOrders, then watch without after_sequence",
                        reason="SEQUENCE_NOT_KEPT",
                        metadata={"oldest_kept_sequence": str(first)},
                    )
                while True:
                    page = await self.store.updates_after(subscription.user_id, last or 0, REPLAY_PAGE)
                    for order, sequence in ((o, s) for s, o in page):
                        last = sequence
                        if not subscription.symbol or subscription.symbol == order.symbol:
                            yield order, sequence
                    if len(page) < REPLAY_PAGE:
                        break
            async for order, sequence in subscription.stream():
                if last is not None and sequence <= last:
                    continue  # already delivered by the replay
                last = sequence
                yield order, sequence
        except ResourceExhausted:
            resume = last if last is not None else 0
            raise ResourceExhausted(
                f"the watcher fell too far behind and was dropped; reconnect with after_sequence={resume} "
                "to receive every update it missed",
                reason="WATCHER_TOO_SLOW",
                metadata={"resume_after_sequence": str(resume)},
            ) from None
