"""A fair share of the exchange: per-user limits on new orders per second and on open orders.

All users trade through one exchange account whose order budget is small (a live Binance account:
about 50 new orders per 10 s), so no user may take all of it. Every user gets the configured
defaults; an admin may set other values for one user (SetUserLimits), stored in the database.

- New orders per second: a token bucket per user holding up to one second's worth of orders (at
  least one), refilled continuously. An order that finds it empty is RESOURCE_EXHAUSTED with a
  RetryInfo saying when the next one is allowed.
- Open orders: PENDING and PARTIALLY_FILLED orders per user, counted in memory (loaded from the
  database at start, kept up to date as orders are placed and end). One more than allowed is
  RESOURCE_EXHAUSTED until one of them ends.

Both refusals name the limit (ErrorInfo metadata ``limit`` and ``value``) and change nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from decimal import Decimal

from services.order_service.domain.model import Order, UserLimits
from services.order_service.service.ports import OrderStore
from shared.errors import ResourceExhausted


def rate_text(rate: Decimal) -> str:
    """A rate as plain text: 10, 0.5."""
    return format(rate.normalize(), "f")


DEFAULT_USER_LIMITS = UserLimits(orders_per_second=Decimal(10), max_open_orders=100)


class FairShare:
    """Admits or refuses a user's new order against the user's limits."""

    def __init__(self, store: OrderStore, defaults: UserLimits, *, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.defaults = defaults
        self.clock = clock
        self._overrides: dict[str, UserLimits] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, at)
        self._open: dict[str, set[str]] = {}

    async def load(self, active: Iterable[Order]) -> None:
        """Read the admin's per-user values and count the open orders (at start)."""
        self._overrides = await self.store.user_limits()
        for order in active:
            self.opened(order)

    def limits_of(self, user_id: str) -> UserLimits:
        """The user's limits: the admin's values, or the defaults."""
        return self._overrides.get(user_id, self.defaults)

    def is_default(self, user_id: str) -> bool:
        """Whether the user has no values of their own."""
        return user_id not in self._overrides

    async def set_limits(self, user_id: str, limits: UserLimits | None) -> UserLimits:
        """Store a user's own values (None: back to the defaults) and apply them at once."""
        await self.store.set_user_limits(user_id, limits)
        if limits is None:
            self._overrides.pop(user_id, None)
        else:
            self._overrides[user_id] = limits
        self._buckets.pop(user_id, None)
        return self.limits_of(user_id)

    def admit(self, user_id: str) -> None:
        """Take one new-order token and check the open-order count; RESOURCE_EXHAUSTED if over the share."""
        limits = self.limits_of(user_id)
        rate = float(limits.orders_per_second)
        capacity = max(1.0, rate)
        now = self.clock()
        tokens, at = self._buckets.get(user_id, (capacity, now))
        tokens = min(capacity, tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[user_id] = (tokens, now)
            raise ResourceExhausted(
                f"more than {rate_text(limits.orders_per_second)} new orders per second: your share of the exchange",
                retry_after=(1.0 - tokens) / rate,
                reason="USER_ORDER_RATE",
                metadata={"limit": "orders_per_second", "value": rate_text(limits.orders_per_second)},
            )
        open_now = len(self._open.get(user_id, ()))
        if open_now >= limits.max_open_orders:
            self._buckets[user_id] = (tokens, now)
            raise ResourceExhausted(
                f"{open_now} open orders: at most {limits.max_open_orders} at once; cancel one or wait for one to end",
                retry_after=1.0,
                reason="USER_OPEN_ORDERS",
                metadata={"limit": "max_open_orders", "value": str(limits.max_open_orders)},
            )
        self._buckets[user_id] = (tokens - 1.0, now)

    def opened(self, order: Order) -> None:
        """Count an order as open (it was persisted and has not ended)."""
        if not order.is_final:
            self._open.setdefault(order.user_id, set()).add(order.order_id)

    def closed(self, order: Order) -> None:
        """An order ended (or was withdrawn before it reached the exchange): it no longer counts."""
        orders = self._open.get(order.user_id)
        if orders is not None:
            orders.discard(order.order_id)
            if not orders:
                del self._open[order.user_id]
