"""GetOrder, ListOrders and ListFills: the caller's own orders only; anyone else's is NOT_FOUND.

Page tokens (``shared.paging``) hold the position (the last order id, or the last fill's row id)
and are scoped to the list and its filters, so a token reused with other filters is refused instead
of silently returning a wrong page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.order_service.domain.model import Caller, Fill, Order
from services.order_service.domain.placement import check_symbol
from services.order_service.domain.states import ACTIVE_STATES, PUBLIC_STATUS, State, Status
from services.order_service.service.cancellation import not_found
from services.order_service.service.ports import OrderStore
from shared.errors import InvalidArgument
from shared.paging import decode_page_token, encode_page_token, page_limit


def states_for(status: Status | None, active_only: bool) -> frozenset[State] | None:
    """The internal states a status filter (and active_only) selects; None for all."""
    states: set[State] | None = None
    if status is not None:
        states = {s for s, public in PUBLIC_STATUS.items() if public is status}
    if active_only:
        states = set(ACTIVE_STATES) if states is None else states & ACTIVE_STATES
    return None if states is None else frozenset(states)


@dataclass(frozen=True)
class OrdersPage:
    """One page of orders and the token of the next one ('' on the last page)."""

    orders: list[Order]
    next_page_token: str


@dataclass(frozen=True)
class FillsPage:
    """One page of fills and the token of the next one ('' on the last page)."""

    fills: list[Fill]
    next_page_token: str


@dataclass(frozen=True)
class TradesPage:
    """One page of a user's fills across orders and the token of the next one ('' on the last page)."""

    trades: list[Fill]
    next_page_token: str


class Queries:
    """The read-only use cases."""

    def __init__(self, store: OrderStore, recorded: Callable[[str, str], Awaitable[None]] | None = None):
        self.store = store
        # Waits for answers given to the caller and not yet committed (``Core.recorded``).
        self._recorded = recorded

    async def _caught_up(self, caller: Caller, order_id: str = "") -> None:
        if self._recorded is not None:
            await self._recorded(caller.user_id, order_id)

    async def get_order(self, caller: Caller, order_id: str) -> Order:
        """One of the caller's orders."""
        if not order_id:
            raise InvalidArgument("order_id", "is required")
        await self._caught_up(caller, order_id)
        order = await self.store.get_order(order_id)
        if order is None or order.user_id != caller.user_id:
            raise not_found(order_id)
        return order

    async def list_orders(
        self,
        caller: Caller,
        *,
        symbol: str = "",
        status: Status | None = None,
        active_only: bool = False,
        size: int = 0,
        token: str = "",
    ) -> OrdersPage:
        """The caller's orders, newest first."""
        limit = page_limit(size)
        filters = f"orders|{caller.user_id}|{symbol}|{status or ''}|{active_only}"
        before = ""
        if token:
            position = decode_page_token(token, filters)
            if not isinstance(position, str):
                raise InvalidArgument("page_token", "is not a page token of this list")
            before = position
        states = states_for(status, active_only)
        if states is not None and not states:
            return OrdersPage([], "")
        await self._caught_up(caller)
        rows = await self.store.list_orders(
            caller.user_id, symbol=symbol, states=states, before_order_id=before, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_page_token(rows[-1].order_id, filters) if more else ""
        return OrdersPage(rows, next_token)

    async def list_fills(self, caller: Caller, order_id: str, *, size: int = 0, token: str = "") -> FillsPage:
        """The fills of one of the caller's orders, oldest first."""
        await self.get_order(caller, order_id)
        limit = page_limit(size)
        filters = f"fills|{order_id}"
        after = 0
        if token:
            position = decode_page_token(token, filters)
            if not isinstance(position, int):
                raise InvalidArgument("page_token", "is not a page token of this list")
            after = position
        rows = await self.store.list_fills(order_id, after_id=after, limit=limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_page_token(rows[-1][0], filters) if more else ""
        return FillsPage([fill for _, fill in rows], next_token)

    async def list_trades(
        self,
        caller: Caller,
        *,
        symbol: str = "",
        start_ms: int | None = None,
        end_ms: int | None = None,
        size: int = 0,
        token: str = "",
    ) -> TradesPage:
        """The caller's fills across orders, newest first, optionally of one symbol within [start, end)."""
        limit = page_limit(size)
        if symbol:
            check_symbol(symbol)
        if start_ms is not None and end_ms is not None and end_ms <= start_ms:
            raise InvalidArgument("end_time", "must be after start_time")
        filters = f"trades|{caller.user_id}|{symbol}|{start_ms}|{end_ms}"
        before: tuple[int, int] | None = None
        if token:
            position = decode_page_token(token, filters)
            time_ms, _, row = str(position).partition(":")
            if not time_ms.isdigit() or not row.isdigit():
                raise InvalidArgument("page_token", "is not a page token of this list")
            before = (int(time_ms), int(row))
        rows = await self.store.list_trades(
            caller.user_id, symbol=symbol, start_ms=start_ms, end_ms=end_ms, before=before, limit=limit + 1
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_page_token(f"{rows[-1][1].trade_time_ms}:{rows[-1][0]}", filters) if more else ""
        return TradesPage([fill for _, fill in rows], next_token)
