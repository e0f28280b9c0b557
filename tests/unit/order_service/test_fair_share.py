"""Each user's share of the exchange: new orders per second (a token bucket) and open orders at once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.order_service.domain.model import Order, OrderType, Side, TimeInForce, UserLimits
from services.order_service.domain.states import State
from services.order_service.service.limits import FairShare
from shared.errors import ResourceExhausted

D = Decimal


class Store:
    def __init__(self) -> None:
        self.saved: dict[str, UserLimits] = {}

    async def user_limits(self) -> dict[str, UserLimits]:
        return dict(self.saved)

    async def set_user_limits(self, user_id: str, limits: UserLimits | None) -> None:
        if limits is None:
            self.saved.pop(user_id, None)
        else:
            self.saved[user_id] = limits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def order(order_id: str, user_id: str = "usr_a", state: State = State.NEW) -> Order:
    return Order(
        order_id=order_id,
        client_order_id=order_id,
        user_id=user_id,
        symbol="BTCUSDT",
        base_asset="BTC",
        quote_asset="USDT",
        side=Side.BUY,
        type=OrderType.LIMIT,
        time_in_force=TimeInForce.GTC,
        quantity=D("0.01"),
        price=D("45000"),
        stop_price=None,
        expire_time_ms=None,
        reserve_asset="USDT",
        reserve_amount=D("450"),
        state=state,
        create_time_ms=0,
        update_time_ms=0,
    )


DEFAULTS = UserLimits(D(2), 3)


def share(limits: UserLimits = DEFAULTS) -> tuple[FairShare, Clock, Any]:
    clock = Clock()
    store = Store()
    return FairShare(store, limits, clock=clock), clock, store  # type: ignore[arg-type]


async def test_a_burst_beyond_the_rate_is_refused_with_a_retry_time_and_the_limit_named() -> None:
    fair, clock, _ = share()
    fair.admit("usr_a")
    fair.admit("usr_a")  # a burst of one second's worth
    with pytest.raises(ResourceExhausted) as refused:
        fair.admit("usr_a")
    assert refused.value.metadata == {"limit": "orders_per_second", "value": "2"}
    assert refused.value.retry_after == pytest.approx(0.5)
    fair.admit("usr_b")  # another user is unaffected
    clock.now += 0.5
    fair.admit("usr_a")  # refilled at 2 per second


async def test_open_orders_are_counted_until_they_end_and_a_final_order_never_counts() -> None:
    fair, _clock, _ = share(UserLimits(D(100), 2))
    await fair.load([order("o1"), order("o2", state=State.FILLED), order("o3", user_id="usr_b")])
    fair.opened(order("o4"))
    with pytest.raises(ResourceExhausted) as refused:
        fair.admit("usr_a")
    assert refused.value.metadata["limit"] == "max_open_orders"
    assert "2 open orders" in str(refused.value)  # o1 as loaded and o4: the filled o2 does not count
    fair.opened(order("o5", user_id="usr_b"))
    with pytest.raises(ResourceExhausted) as refused:
        fair.admit("usr_b")
    assert "2 open orders" in str(refused.value)  # o3 as loaded and o5
    fair.closed(order("o1", state=State.CANCELLED))
    fair.admit("usr_a")


async def test_an_admins_values_apply_at_once_are_stored_and_can_be_reset_to_the_defaults() -> None:
    fair, _clock, store = share()
    assert fair.is_default("usr_a")
    await fair.set_limits("usr_a", UserLimits(D("0.5"), 1))
    assert store.saved["usr_a"] == UserLimits(D("0.5"), 1) and not fair.is_default("usr_a")
    fair.admit("usr_a")  # capacity is at least one order
    with pytest.raises(ResourceExhausted) as refused:
        fair.admit("usr_a")
    assert refused.value.retry_after == pytest.approx(2.0)
    again, _, _ = share()
    again.store = store
    await again.load([])
    assert again.limits_of("usr_a") == UserLimits(D("0.5"), 1), "read back at start"
    await fair.set_limits("usr_a", None)
    assert fair.limits_of("usr_a") == UserLimits(D(2), 3) and "usr_a" not in store.saved
