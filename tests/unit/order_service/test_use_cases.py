"""The use cases over fake ports and a real SQLite file: placement, fills, cancel, expiry, watch, lists."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

import pytest

from services.order_service.api.auth import Authenticator
from services.order_service.domain.model import ExchangeStatus, OrderType, Side, TimeInForce, UserStatus
from services.order_service.domain.placement import NewOrderRequest
from services.order_service.domain.states import State, Status
from services.order_service.service.deadline import Deadline
from shared.errors import (
    Aborted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

from .conftest import ALICE, BOB, Harness, limit_buy
from .fakes import COMMISSION

D = Decimal


async def until(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (a wait with a limit, not a timing assertion)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() > end:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)


def usdt(h: Harness, user: str = ALICE) -> tuple[Decimal, Decimal]:
    return h.users.balance(user, "USDT")


def btc(h: Harness, user: str = ALICE) -> tuple[Decimal, Decimal]:
    return h.users.balance(user, "BTC")


async def test_a_limit_buy_reserves_then_fills_and_settles_exactly(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.01000", "49000.00"))
    assert order.status is Status.PENDING and order.state is State.NEW
    assert order.exchange_order_id
    assert usdt(h) == (D("99510"), D("490"))

    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.settle()

    filled = await h.order(order.order_id)
    assert filled.status is Status.FILLED
    assert (filled.filled_quantity, filled.average_price) == (D("0.01"), D("49000"))
    assert (filled.commission, filled.commission_asset) == (D("0.00001"), "BTC")
    assert usdt(h) == (D("99510"), D("0"))
    assert btc(h) == (D("1") + D("0.01") - D("0.01") * COMMISSION, D("0"))
    assert h.users.calls["settle"] == 1
    page = await h.app.queries.list_fills(h.alice, order.order_id)
    assert [f.fill_id for f in page.fills] == ["BTCUSDT:1001"]


async def test_a_fill_at_a_better_price_releases_the_difference(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.01000", "49000.00"))
    await h.gateway.trade(order.order_id, "0.01", "48000.00")
    await h.settle()
    assert usdt(h) == (D("100000") - D("480"), D("0"))


async def test_the_same_client_order_id_twice_gives_one_order(harness: Harness) -> None:
    h = harness
    first = await h.place(limit_buy(client_order_id="abc-1"))
    again = await h.place(limit_buy(client_order_id="abc-1"))
    assert again.order_id == first.order_id
    with pytest.raises(Aborted) as conflict:  # the same id for another order is a conflict, never a silent hit
        await h.place(limit_buy(client_order_id="abc-1", quantity="0.02000"))
    assert conflict.value.metadata["field"] == "quantity"
    assert (h.users.calls["reserve"], h.gateway.calls["submit"]) == (1, 1)
    # Another user may use the same client order id.
    bobs = await h.place(limit_buy(client_order_id="abc-1"), h.bob)
    assert bobs.order_id != first.order_id


async def test_concurrent_duplicates_give_one_order(harness: Harness) -> None:
    h = harness
    orders = await asyncio.gather(*(h.place(limit_buy(client_order_id="same")) for _ in range(5)))
    assert len({o.order_id for o in orders}) == 1
    assert h.users.calls["reserve"] == 1
    page = await h.app.queries.list_orders(h.alice)
    assert len(page.orders) == 1


async def test_insufficient_funds_is_failed_precondition_and_changes_nothing(harness: Harness) -> None:
    h = harness
    with pytest.raises(FailedPrecondition):
        await h.place(limit_buy("10.00000", "49000.00"))
    assert usdt(h) == (D("100000"), D("0"))
    assert h.gateway.calls["submit"] == 0
    assert (await h.app.queries.list_orders(h.alice)).orders == []


async def test_a_user_who_is_not_active_cannot_place(harness: Harness) -> None:
    h = harness
    suspended = replace(h.alice, status=UserStatus.SUSPENDED)
    with pytest.raises(FailedPrecondition) as raised:
        await h.place(limit_buy(), suspended)
    assert raised.value.reason == "USER_NOT_ACTIVE"
    assert h.users.calls["reserve"] == 0
    assert (await h.app.queries.list_orders(h.alice)).orders == []


async def test_an_unknown_symbol_is_invalid_argument(harness: Harness) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await harness.place(replace(limit_buy(), symbol="NOPEUSDT"))
    assert raised.value.field == "symbol"


@pytest.mark.parametrize(
    "error", [InvalidArgument("price", "Filter failure: PERCENT_PRICE_BY_SIDE"), ResourceExhausted("queue full")]
)
async def test_a_gateway_refusal_that_sent_nothing_releases_and_forgets_it(harness: Harness, error: Exception) -> None:
    h = harness
    h.gateway.submit_error = error
    with pytest.raises(type(error)):
        await h.place(limit_buy(client_order_id="retry-me"))
    assert usdt(h) == (D("100000"), D("0"))
    assert (await h.app.queries.list_orders(h.alice)).orders == []
    # The same client order id can be used again once the gateway takes orders.
    h.gateway.submit_error = None
    order = await h.place(limit_buy(client_order_id="retry-me"))
    assert order.status is Status.PENDING


async def test_an_exchange_rejection_is_rejected_with_its_reason_and_funds_released(harness: Harness) -> None:
    h = harness
    h.gateway.reject_reason = "Account has insufficient balance for requested action."
    order = await h.place(limit_buy())
    assert order.status is Status.REJECTED
    assert order.reject_reason == "Account has insufficient balance for requested action."
    assert usdt(h) == (D("100000"), D("0"))  # released before PlaceOrder answered
    await h.settle()
    assert (await h.order(order.order_id)).status is Status.REJECTED


async def test_an_unknown_submission_stays_pending_until_the_stream_resolves_it(harness: Harness) -> None:
    h = harness
    h.gateway.submit_answer = ExchangeStatus.UNKNOWN
    h.gateway.flowing.clear()
    order = await h.place(limit_buy())
    assert order.status is Status.PENDING and order.state is State.SUBMIT_UNKNOWN
    h.gateway.flowing.set()
    await h.settle()
    assert (await h.order(order.order_id)).state is State.NEW


async def test_a_lost_submit_answer_is_resolved_by_resubmitting_with_the_same_id(harness: Harness) -> None:
    h = harness

    def lose_answer(method: str, stage: str) -> None:
        if (method, stage) == ("submit", "after"):
            raise Unavailable("connection reset")

    h.gateway.hook = lose_answer
    h.gateway.flowing.clear()
    order = await h.place(limit_buy())
    assert order.state is State.SUBMIT_UNKNOWN
    h.gateway.hook = None
    await h.app.reconciler.tick()
    assert (await h.order(order.order_id)).state is State.NEW
    assert h.gateway.sent[order.order_id] == 1  # asked twice, sent once
    h.gateway.flowing.set()
    await h.settle()


async def test_partial_fill_then_cancel_settles_the_part_and_releases_the_rest(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000", "49000.00"))
    await h.gateway.trade(order.order_id, "0.005", "49000.00")
    await h.settle()
    assert (await h.order(order.order_id)).status is Status.PARTIALLY_FILLED

    cancelled = await h.app.cancel_order(h.alice, order.order_id, _deadline())
    assert cancelled.status is Status.CANCELLED
    assert not cancelled.cancel_requested
    assert usdt(h) == (D("100000") - D("245"), D("0"))  # released before CancelOrder answered
    await h.settle()
    assert btc(h) == (D("1") + D("0.005") - D("0.000005"), D("0"))
    final = await h.order(order.order_id)
    assert (final.filled_quantity, final.remaining_quantity) == (D("0.005"), D("0.015"))


async def test_a_trade_racing_the_cancel_is_settled_before_the_release(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000", "49000.00"))
    await h.settle()
    h.gateway.flowing.clear()  # the consumer lags behind the exchange
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    answer = await h.app.cancel_order(h.alice, order.order_id, _deadline())
    # The gateway says CANCELED with 0.01 executed, but that trade is not applied here yet.
    assert answer.status is Status.PENDING and answer.cancel_requested
    assert h.users.calls["release"] == 0
    h.gateway.flowing.set()
    await h.settle()
    final = await h.order(order.order_id)
    assert final.status is Status.CANCELLED and final.filled_quantity == D("0.01")
    assert usdt(h) == (D("100000") - D("490"), D("0"))
    kinds = [e.kind for e in h.users.ledger if e.asset == "USDT" and e.reference != "deposit"]
    assert kinds == ["RESERVE", "TRADE_DEBIT", "RELEASE"]


async def test_a_trade_after_the_cancel_is_settled_but_the_order_stays_cancelled_and_it_is_an_anomaly(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000", "49000.00"))
    cancelled = await h.app.cancel_order(h.alice, order.order_id, _deadline())
    assert cancelled.status is Status.CANCELLED
    await h.settle()
    assert usdt(h) == (D("100000"), D("0"))
    with caplog.at_level(logging.ERROR, logger="order_service"):
        await h.gateway.trade(order.order_id, "0.005", "49000.00")  # the exchange filled it after all
        await h.settle()
    final = await h.order(order.order_id)
    assert final.status is Status.CANCELLED and final.filled_quantity == D("0.005")
    assert usdt(h) == (D("100000") - D("245"), D("0"))
    assert btc(h) == (D("1") + D("0.005") - D("0.000005"), D("0"))
    assert h.users.calls["release"] == 1  # released once, at the cancel
    (logged,) = [r for r in caplog.records if r.getMessage() == "order anomaly"]
    assert "refused transition CANCELLED -> PARTIALLY_FILLED" in logged.__dict__["anomaly"]
    assert h.app.telemetry.registry.get_sample_value("trading_order_anomalies_total") == 1


async def test_an_inconclusive_cancel_stays_requested_until_the_exchange_confirms(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy())
    h.gateway.cancel_conclusive = False  # timeout or 5xx at the exchange: the gateway returns NEW
    answer = await h.app.cancel_order(h.alice, order.order_id, _deadline())
    assert answer.status is Status.PENDING and answer.cancel_requested
    await h.settle()
    assert (await h.order(order.order_id)).cancel_requested
    await h.gateway.confirm_cancel(order.order_id)
    await h.settle()
    final = await h.order(order.order_id)
    assert final.status is Status.CANCELLED and not final.cancel_requested
    assert usdt(h) == (D("100000"), D("0"))


async def test_only_pending_or_partially_filled_orders_can_be_cancelled(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy())
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.settle()
    with pytest.raises(FailedPrecondition):
        await h.app.cancel_order(h.alice, order.order_id, _deadline())


async def test_another_users_order_is_not_found(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy())
    with pytest.raises(NotFound):
        await h.app.queries.get_order(h.bob, order.order_id)
    with pytest.raises(NotFound):
        await h.app.queries.list_fills(h.bob, order.order_id)
    with pytest.raises(NotFound):
        await h.app.cancel_order(h.bob, order.order_id, _deadline())
    assert (await h.app.queries.list_orders(h.bob)).orders == []


async def test_ioc_remainder_expires_at_the_exchange_and_is_released(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000", "50000.00", time_in_force=TimeInForce.IOC))
    assert order.time_in_force is TimeInForce.IOC
    await h.gateway.trade(order.order_id, "0.01", "50000.00")
    await h.gateway.expire(order.order_id, "IOC remainder expired")
    await h.settle()
    final = await h.order(order.order_id)
    assert final.status is Status.EXPIRED and final.reject_reason == "IOC remainder expired"
    assert usdt(h) == (D("99500"), D("0"))


async def test_an_order_expires_at_its_expire_time(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy(expire_time_ms=h.app.core.clock() + 300))
    await until(lambda: h.gateway.calls["cancel"] >= 1)
    await h.settle()
    final = await h.order(order.order_id)
    assert final.status is Status.EXPIRED
    assert final.reject_reason == "expire_time reached"
    assert usdt(h) == (D("100000"), D("0"))


async def test_market_buy_reserves_with_protection_and_releases_the_unused_part(harness: Harness) -> None:
    h = harness
    request = NewOrderRequest(symbol="BTCUSDT", side=Side.BUY, type=OrderType.MARKET, quantity="0.01000")
    order = await h.place(request)
    assert order.reserve_amount == D("525")
    await h.gateway.trade(order.order_id, "0.01", "50010.00")
    await h.settle()
    assert usdt(h) == (D("100000") - D("500.1"), D("0"))


async def test_a_sell_reserves_base_and_credits_quote_minus_commission(harness: Harness) -> None:
    h = harness
    request = NewOrderRequest(symbol="BTCUSDT", side=Side.SELL, type=OrderType.STOP_LIMIT, quantity="0.10000",
                              price="48000.00", stop_price="48100.00")  # fmt: skip
    order = await h.place(request)
    assert btc(h) == (D("0.9"), D("0.1"))
    await h.gateway.trade(order.order_id, "0.1", "48000.00")
    await h.settle()
    assert btc(h) == (D("0.9"), D("0"))
    assert usdt(h) == (D("100000") + D("4800") - D("4.8"), D("0"))


async def test_watchers_see_every_change_of_their_own_orders_only(harness: Harness) -> None:
    h = harness
    alice_sub = h.app.hub.subscribe(ALICE)
    bob_sub = h.app.hub.subscribe(BOB)
    eth_only = h.app.hub.subscribe(ALICE, "ETHUSDT")
    order = await h.place(limit_buy("0.02000"))
    await h.gateway.trade(order.order_id, "0.01", "49000.00")
    await h.settle()
    await h.app.cancel_order(h.alice, order.order_id, _deadline())
    await h.settle()
    items = []
    while not alice_sub.queue.empty():
        items.append(alice_sub.queue.get_nowait())
    seen = [order for order, _ in items]  # type: ignore[misc]
    sequences = [sequence for _, sequence in items]  # type: ignore[misc]
    assert sequences == list(range(1, len(items) + 1)), "one per-user sequence, no gap"
    statuses = [o.status for o in seen]
    assert statuses[0] is Status.PENDING
    assert Status.PARTIALLY_FILLED in statuses
    assert statuses[-1] is Status.CANCELLED
    assert any(o.cancel_requested for o in seen)
    assert all(o.order_id == order.order_id for o in seen)
    assert bob_sub.queue.empty()
    assert eth_only.queue.empty()


async def test_a_slow_watcher_is_dropped_with_resource_exhausted(harness: Harness) -> None:
    h = harness
    h.app.hub.queue_size = 2
    subscription = h.app.hub.subscribe(ALICE)
    for _ in range(3):
        await h.place(limit_buy())
    await h.settle()  # the answers are recorded (and published) just after the replies
    assert subscription.dropped
    with pytest.raises(ResourceExhausted) as dropped:
        async for _ in h.app.feed.follow(subscription, None):
            pass
    # It received the first two updates (sequences 1 and 2) before it was dropped: resume after 2.
    assert dropped.value.metadata["resume_after_sequence"] == "2"


async def test_list_orders_newest_first_with_filters_and_page_tokens(harness: Harness) -> None:
    h = harness
    placed = [await h.place(limit_buy()) for _ in range(5)]
    await h.gateway.trade(placed[0].order_id, "0.01", "49000.00")
    await h.settle()
    first = await h.app.queries.list_orders(h.alice, size=2)
    assert [o.order_id for o in first.orders] == [placed[4].order_id, placed[3].order_id]
    second = await h.app.queries.list_orders(h.alice, size=2, token=first.next_page_token)
    third = await h.app.queries.list_orders(h.alice, size=2, token=second.next_page_token)
    assert [o.order_id for o in second.orders + third.orders] == [p.order_id for p in reversed(placed[:3])]
    assert third.next_page_token == ""
    active = await h.app.queries.list_orders(h.alice, active_only=True)
    assert len(active.orders) == 4
    filled = await h.app.queries.list_orders(h.alice, status=Status.FILLED)
    assert [o.order_id for o in filled.orders] == [placed[0].order_id]
    assert (await h.app.queries.list_orders(h.alice, status=Status.FILLED, active_only=True)).orders == []
    assert (await h.app.queries.list_orders(h.alice, symbol="ETHUSDT")).orders == []
    with pytest.raises(InvalidArgument) as raised:
        await h.app.queries.list_orders(h.alice, symbol="ETHUSDT", size=2, token=first.next_page_token)
    assert raised.value.field == "page_token"
    with pytest.raises(InvalidArgument):
        await h.app.queries.list_orders(h.alice, token="garbage!")
    with pytest.raises(InvalidArgument):
        await h.app.queries.list_orders(h.alice, size=-1)
    lowered = await h.app.queries.list_orders(h.alice, size=5000)  # to 1000, the most a page holds
    assert [o.order_id for o in lowered.orders] == [p.order_id for p in reversed(placed)]


async def test_the_admin_and_service_tokens_are_not_users(harness: Harness) -> None:
    h = harness
    auth = Authenticator(h.users, reserved_tokens=("admin-token-123", "service-token-456"))
    with pytest.raises(PermissionDenied):
        await auth.authenticate("admin-token-123")
    caller = await auth.authenticate("tk_alice_secret_0000000000000000")
    assert caller.user_id == ALICE


async def test_authentication_is_cached_briefly(harness: Harness) -> None:
    now = [0.0]
    auth = Authenticator(harness.users, ttl=2.0, clock=lambda: now[0])
    key = "tk_alice_secret_0000000000000000"
    await asyncio.gather(*(auth.authenticate(key) for _ in range(10)))
    assert harness.users.calls["authenticate"] == 1
    harness.users.set_status(ALICE, UserStatus.SUSPENDED)
    assert (await auth.authenticate(key)).status is UserStatus.ACTIVE  # still cached
    now[0] = 2.5
    assert (await auth.authenticate(key)).status is UserStatus.SUSPENDED
    del harness.users.keys[key]  # revoked
    now[0] = 5.0
    with pytest.raises(Unauthenticated):
        await auth.authenticate(key)


def _deadline() -> Deadline:
    return Deadline.after(5)
