"""The order flows end to end: the real processes (``python -m services.<name>``) and the simulator.

The same flows as tests/integration/order_service, but against the four OS processes of the module-scoped
``processes`` stack: a user created by the admin, funded, trading with an API key over gRPC while the
simulator's control endpoint moves the market. The stack (and so the market price and the simulator's book) is
shared by the tests of this module, so every test uses its own users, sets the prices it needs first, and
cancels whatever it left resting. Side effects reach the user service asynchronously (through the order
service's outbox), so balances are polled until they reach the exact expected values.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.order_watch import Watch
from trading.order.v1 import order_pb2, order_service_pb2
from trading.user.v1 import user_pb2, user_service_pb2

from .conftest import ProcessStack, StackClients

pytestmark = pytest.mark.e2e

D = Decimal
pb = order_pb2
K = user_pb2
BUY, SELL = pb.ORDER_SIDE_BUY, pb.ORDER_SIDE_SELL
LIMIT, MARKET = pb.ORDER_TYPE_LIMIT, pb.ORDER_TYPE_MARKET
FINAL = {pb.ORDER_STATUS_FILLED, pb.ORDER_STATUS_CANCELLED, pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_EXPIRED}
Balances = dict[str, tuple[Decimal, Decimal]]
MARKET_PRICE = "50000.00"


@dataclass
class Trader:
    user_id: str
    auth: tuple[tuple[str, str], ...]


class Flows(StackClients):
    """Clients of the running stack, and the orders placed through them (cancelled at the end)."""

    def __init__(self, stack: ProcessStack):
        super().__init__(stack)
        self.placed: list[tuple[Trader, str]] = []

    async def close(self) -> None:
        # Leave nothing resting in the shared simulator: a stray bid would take the volume of a later test.
        for trader, order_id in self.placed:
            with contextlib.suppress(grpc.aio.AioRpcError, AssertionError):
                if (await self.get(trader, order_id)).status not in FINAL:
                    await self.cancel(trader, order_id)
                    await self.wait(trader, order_id)
        await super().close()

    # ---------------------------------------------------------------- user service (admin)

    async def trader(self, deposits: dict[str, str]) -> Trader:
        name = f"flow{secrets.token_hex(4)}"
        created = await self.users.CreateUser(
            user_service_pb2.CreateUserRequest(username=name, email=f"{name}@example.com"), metadata=self.admin
        )
        user_id = created.user.user_id
        for asset, amount in deposits.items():
            await self.users.Deposit(
                user_service_pb2.DepositRequest(
                    user_id=user_id, asset=asset, amount=amount, request_id=f"dep-{user_id}-{asset}"
                ),
                metadata=self.admin,
            )
        key = await self.users.CreateApiKey(
            user_service_pb2.CreateApiKeyRequest(user_id=user_id, label="e2e"), metadata=self.admin
        )
        return Trader(user_id, (("authorization", f"Bearer {key.api_key}"),))

    async def balances(self, trader: Trader) -> Balances:
        return await self.user_balances(trader.user_id)

    async def ledger(self, trader: Trader) -> list[user_pb2.LedgerEntry]:
        """Every ledger entry of the user, oldest first."""
        entries: list[user_pb2.LedgerEntry] = []
        token = ""
        while True:
            response = await self.users.ListLedgerEntries(
                user_service_pb2.ListLedgerEntriesRequest(user_id=trader.user_id, page_size=1000, page_token=token),
                metadata=self.admin,
            )
            entries.extend(response.entries)
            token = response.next_page_token
            if not token:
                return list(reversed(entries))

    async def balances_become(self, trader: Trader, expected: Balances, timeout: float = 10.0) -> Balances:
        """Poll until the balances are exactly ``expected`` (settlement runs after the fill, through the outbox)."""
        deadline = time.monotonic() + timeout
        while True:
            balances = await self.balances(trader)
            if balances == expected or time.monotonic() > deadline:
                assert balances == expected, self.stack.logs()
                return balances
            await asyncio.sleep(0.1)

    # ---------------------------------------------------------------- order service (the user's API key)

    async def place(self, trader: Trader, **fields: Any) -> pb.Order:
        fields.setdefault("symbol", "BTCUSDT")
        response = await self.orders.PlaceOrder(
            order_service_pb2.PlaceOrderRequest(**fields), metadata=trader.auth, timeout=10
        )
        self.placed.append((trader, response.order.order_id))
        return response.order

    async def get(self, trader: Trader, order_id: str) -> pb.Order:
        response = await self.orders.GetOrder(
            order_service_pb2.GetOrderRequest(order_id=order_id), metadata=trader.auth, timeout=5
        )
        return response.order

    async def cancel(self, trader: Trader, order_id: str) -> pb.Order:
        response = await self.orders.CancelOrder(
            order_service_pb2.CancelOrderRequest(order_id=order_id), metadata=trader.auth, timeout=10
        )
        return response.order

    async def fills(self, trader: Trader, order_id: str) -> list[pb.Fill]:
        response = await self.orders.ListFills(
            order_service_pb2.ListFillsRequest(order_id=order_id), metadata=trader.auth, timeout=5
        )
        return list(response.fills)

    async def list_orders(self, trader: Trader) -> list[pb.Order]:
        response = await self.orders.ListOrders(
            order_service_pb2.ListOrdersRequest(page_size=100), metadata=trader.auth, timeout=5
        )
        return list(response.orders)

    async def wait(
        self, trader: Trader, order_id: str, until: Callable[[pb.Order], bool] | None = None, timeout: float = 15.0
    ) -> pb.Order:
        """Poll GetOrder until ``until`` (default: a final status) holds."""
        check = until or (lambda o: o.status in FINAL)
        deadline = time.monotonic() + timeout
        while True:
            order = await self.get(trader, order_id)
            if check(order):
                return order
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} stuck at {pb.OrderStatus.Name(order.status)}: {order}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def flows(processes: ProcessStack) -> AsyncIterator[Flows]:
    f = Flows(processes)
    try:
        await f.price(MARKET_PRICE)  # whatever an earlier test left, the market starts here
        yield f
    finally:
        await f.close()


def explain(entries: list[user_pb2.LedgerEntry], asset: str) -> tuple[Decimal, Decimal]:
    """The (available, locked) that the ledger entries of one asset add up to."""
    available = sum((D(e.available_delta) for e in entries if e.asset == asset), D(0))
    locked = sum((D(e.locked_delta) for e in entries if e.asset == asset), D(0))
    return available, locked


def kinds(entries: list[user_pb2.LedgerEntry]) -> list[tuple[str, str]]:
    return [
        (e.asset, K.LedgerEntryKind.Name(e.kind).removeprefix("LEDGER_ENTRY_KIND_"))
        for e in entries
        if D(e.available_delta) or D(e.locked_delta)
    ]


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


def settled_balances(order: pb.Order, before: Balances) -> Balances:
    """What the balances must become after ``order``'s fills: quote for base, minus the commission, nothing locked."""
    qty, quote, fee = D(order.filled_quantity), D(order.filled_quote_quantity), D(order.commission)
    usdt0, btc0 = before.get("USDT", (D(0), D(0)))[0], before.get("BTC", (D(0), D(0)))[0]
    if order.side == BUY:
        assert order.commission_asset == "BTC"
        assert fee == (qty * D("0.001")).quantize(D("0.00000001"))
        return {"USDT": (usdt0 - quote, D(0)), "BTC": (btc0 + qty - fee, D(0))}
    assert order.commission_asset == "USDT"
    assert fee == (quote * D("0.001")).quantize(D("0.00000001"))
    return {"BTC": (btc0 - qty, D(0)), "USDT": (usdt0 + quote - fee, D(0))}


async def assert_settled_exactly(flows: Flows, trader: Trader, order: pb.Order, before: Balances) -> None:
    fills = await flows.fills(trader, order.order_id)
    assert sum(D(f.quantity) for f in fills) == D(order.filled_quantity)
    assert sum(D(f.quote_quantity) for f in fills) == D(order.filled_quote_quantity)
    balances = await flows.balances_become(trader, settled_balances(order, before))
    entries = await flows.ledger(trader)
    for asset, balance in balances.items():
        assert explain(entries, asset) == balance


# ------------------------------------------------------------------------------------------ 1. a limit fill


async def test_a_limit_buy_below_the_market_fills_and_the_ledger_explains_it(flows: Flows) -> None:
    trader = await flows.trader({"USDT": "10000"})
    order = await flows.place(trader, side=BUY, type=LIMIT, quantity="0.01", price="49000.00")
    assert order.status == pb.ORDER_STATUS_PENDING
    assert await flows.balances(trader) == {"USDT": (D("9510"), D("490"))}

    await flows.price("48990.00")  # the market moves through the limit
    filled = await flows.wait(trader, order.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    assert (filled.filled_quantity, filled.average_price) == ("0.01000000", "49000.00000000")
    assert (filled.commission, filled.commission_asset) == ("0.00001000", "BTC")
    (fill,) = await flows.fills(trader, order.order_id)
    assert (fill.price, fill.quantity, fill.quote_quantity) == ("49000.00000000", "0.01000000", "490.00000000")

    # USDT down by exactly price x quantity; BTC up by the quantity minus 0.1 % of it.
    expected = {"USDT": (D("10000") - D("49000") * D("0.01"), D(0)), "BTC": (D("0.01") - D("0.00001"), D(0))}
    balances = await flows.balances_become(trader, expected)
    entries = await flows.ledger(trader)
    for asset, balance in balances.items():
        assert explain(entries, asset) == balance
    assert kinds(entries) == [
        ("USDT", "DEPOSIT"),
        ("USDT", "RESERVE"),
        ("USDT", "TRADE_DEBIT"),
        ("BTC", "TRADE_CREDIT"),
        ("BTC", "FEE"),
    ]  # nothing left over, so no RELEASE
    assert {e.reference for e in entries if e.kind == K.LEDGER_ENTRY_KIND_RESERVE} == {order.order_id}
    assert {e.reference for e in entries if e.kind == K.LEDGER_ENTRY_KIND_FEE} == {fill.fill_id}


# ------------------------------------------------------------------------------------------ 2. partial, then cancel


async def test_partial_fill_then_cancel_settles_the_part_and_releases_the_rest(flows: Flows) -> None:
    trader = await flows.trader({"USDT": "10000"})
    order = await flows.place(trader, side=BUY, type=LIMIT, quantity="0.02", price="49000.00")
    await flows.price("49000.00", volume="0.005")  # only 0.005 trades at this update
    partial = await flows.wait(trader, order.order_id, lambda o: o.status == pb.ORDER_STATUS_PARTIALLY_FILLED)
    assert (partial.filled_quantity, partial.remaining_quantity) == ("0.00500000", "0.01500000")
    await flows.price(MARKET_PRICE)  # away from the limit: nothing more trades

    cancelled = await flows.cancel(trader, order.order_id)
    if cancelled.status != pb.ORDER_STATUS_CANCELLED:  # the confirmation may still be on its way
        assert cancelled.cancel_requested
        cancelled = await flows.wait(trader, order.order_id)
    assert cancelled.status == pb.ORDER_STATUS_CANCELLED
    assert cancelled.filled_quantity == "0.00500000"

    expected = {"USDT": (D("10000") - D("245"), D(0)), "BTC": (D("0.005") - D("0.000005"), D(0))}
    balances = await flows.balances_become(trader, expected)
    entries = await flows.ledger(trader)
    for asset, balance in balances.items():
        assert explain(entries, asset) == balance
    releases = [e for e in entries if e.kind == K.LEDGER_ENTRY_KIND_RELEASE]
    assert [(D(e.available_delta), D(e.locked_delta)) for e in releases] == [(D("735"), D("-735"))]
    assert sorted(kinds(entries)) == sorted(
        [
            ("USDT", "DEPOSIT"),
            ("USDT", "RESERVE"),
            ("USDT", "TRADE_DEBIT"),
            ("BTC", "TRADE_CREDIT"),
            ("BTC", "FEE"),
            ("USDT", "RELEASE"),
        ]
    )


# ------------------------------------------------------------------------------------------ 3. order types


@pytest.mark.parametrize("side", [BUY, SELL], ids=["buy", "sell"])
async def test_a_market_order_fills_at_once(flows: Flows, side: int) -> None:
    trader = await flows.trader({"USDT": "10000", "BTC": "1"})
    before = await flows.balances(trader)
    order = await flows.place(trader, side=side, type=MARKET, quantity="0.01")
    filled = await flows.wait(trader, order.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    assert filled.filled_quantity == "0.01000000"
    await assert_settled_exactly(flows, trader, filled, before)


STOPS: list[tuple[int, int, dict[str, Any], str]] = [
    # (side, type, prices, where the market goes to trigger it)
    (SELL, pb.ORDER_TYPE_STOP, {"stop_price": "49000.00"}, "48990.00"),
    (BUY, pb.ORDER_TYPE_STOP, {"stop_price": "51000.00"}, "51000.00"),
    (SELL, pb.ORDER_TYPE_STOP_LIMIT, {"stop_price": "49000.00", "price": "48950.00"}, "48990.00"),
    (BUY, pb.ORDER_TYPE_STOP_LIMIT, {"stop_price": "51000.00", "price": "51050.00"}, "51000.00"),
]


@pytest.mark.parametrize(
    ("side", "type_", "prices", "trigger"),
    STOPS,
    ids=["stop-sell", "stop-buy", "stop-limit-sell", "stop-limit-buy"],
)
async def test_a_stop_order_waits_for_its_trigger_then_fills(
    flows: Flows, side: int, type_: int, prices: dict[str, Any], trigger: str
) -> None:
    trader = await flows.trader({"USDT": "10000", "BTC": "1"})
    before = await flows.balances(trader)
    order = await flows.place(trader, side=side, type=type_, quantity="0.01", **prices)
    assert order.status == pb.ORDER_STATUS_PENDING
    await flows.price(MARKET_PRICE)  # nothing happens at the current price
    assert (await flows.get(trader, order.order_id)).status == pb.ORDER_STATUS_PENDING
    await flows.price(trigger)
    filled = await flows.wait(trader, order.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    await assert_settled_exactly(flows, trader, filled, before)


async def test_ioc_fills_when_it_can_and_expires_when_it_cannot(flows: Flows) -> None:
    trader = await flows.trader({"USDT": "10000"})
    before = await flows.balances(trader)
    ioc = {"side": BUY, "type": LIMIT, "quantity": "0.01", "time_in_force": pb.TIME_IN_FORCE_IOC}
    filled = await flows.place(trader, price="50100.00", **ioc)
    filled = await flows.wait(trader, filled.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    await assert_settled_exactly(flows, trader, filled, before)

    before = await flows.balances(trader)
    expired = await flows.place(trader, price="49000.00", **ioc)
    expired = await flows.wait(trader, expired.order_id)
    assert expired.status == pb.ORDER_STATUS_EXPIRED
    assert expired.time_in_force == pb.TIME_IN_FORCE_IOC
    assert expired.filled_quantity == "0.00000000"
    await flows.balances_become(trader, before)  # reserved, then released in full


async def test_fok_fills_completely_or_expires(flows: Flows) -> None:
    trader = await flows.trader({"USDT": "100000", "BTC": "1"})
    before = await flows.balances(trader)
    fok = {"type": LIMIT, "quantity": "0.02", "time_in_force": pb.TIME_IN_FORCE_FOK}
    filled = await flows.place(trader, side=SELL, price="49900.00", **fok)
    filled = await flows.wait(trader, filled.order_id)
    assert filled.status == pb.ORDER_STATUS_FILLED
    await assert_settled_exactly(flows, trader, filled, before)

    before = await flows.balances(trader)
    killed = await flows.place(trader, side=BUY, price="49000.00", **fok)  # below the market: nothing to take
    killed = await flows.wait(trader, killed.order_id)
    assert killed.status == pb.ORDER_STATUS_EXPIRED
    assert killed.filled_quantity == "0.00000000"
    await flows.balances_become(trader, before)


async def test_an_order_expires_at_its_expire_time_and_releases_its_funds(flows: Flows) -> None:
    trader = await flows.trader({"USDT": "10000"})
    expire = Timestamp()
    expire.FromMilliseconds(int(time.time() * 1000) + 2000)
    order = await flows.place(trader, side=BUY, type=LIMIT, quantity="0.01", price="49000.00", expire_time=expire)
    assert order.status == pb.ORDER_STATUS_PENDING
    assert order.expire_time == expire
    assert await flows.balances(trader) == {"USDT": (D("9510"), D("490"))}
    ended = await flows.wait(trader, order.order_id)
    assert ended.status == pb.ORDER_STATUS_EXPIRED
    assert ended.filled_quantity == "0.00000000"
    await flows.balances_become(trader, {"USDT": (D("10000"), D("0"))})
    assert kinds(await flows.ledger(trader)) == [("USDT", "DEPOSIT"), ("USDT", "RESERVE"), ("USDT", "RELEASE")]


# ------------------------------------------------------------------------------------------ 4. placement promises

LIMIT_BUY: dict[str, Any] = {"side": BUY, "type": LIMIT, "quantity": "0.01", "price": "48000.00"}


async def test_the_same_client_order_id_twice_gives_one_order(flows: Flows) -> None:
    trader = await flows.trader({"USDT": "10000"})
    first = await flows.place(trader, client_order_id="e2e-same-1", **LIMIT_BUY)
    again = await flows.place(trader, client_order_id="e2e-same-1", **LIMIT_BUY)
    assert again.order_id == first.order_id
    assert again.client_order_id == "e2e-same-1"
    assert [o.order_id for o in await flows.list_orders(trader)] == [first.order_id]
    assert await flows.balances(trader) == {"USDT": (D("9520"), D("480"))}  # one reservation
    assert kinds(await flows.ledger(trader)) == [("USDT", "DEPOSIT"), ("USDT", "RESERVE")]


async def test_insufficient_funds_is_failed_precondition_and_changes_nothing(flows: Flows) -> None:
    trader = await flows.trader({"USDT": "100"})
    ledger_before = await flows.ledger(trader)
    error = await rpc_error(flows.place(trader, **LIMIT_BUY))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await flows.balances(trader) == {"USDT": (D("100"), D("0"))}
    assert await flows.ledger(trader) == ledger_before
    assert kinds(ledger_before) == [("USDT", "DEPOSIT")]
    assert await flows.list_orders(trader) == []


async def test_a_suspended_user_is_failed_precondition_and_changes_nothing(flows: Flows) -> None:
    trader = await flows.trader({"USDT": "10000"})
    resting = await flows.place(trader, **LIMIT_BUY)
    await flows.balances_become(trader, {"USDT": (D("9520"), D("480"))})
    await flows.users.UpdateUserStatus(
        user_service_pb2.UpdateUserStatusRequest(user_id=trader.user_id, status=user_pb2.USER_STATUS_SUSPENDED),
        metadata=flows.admin,
    )
    await asyncio.sleep(1.0)  # the stack's order service caches authentication for 0.5 s
    balances_before, ledger_before = await flows.balances(trader), await flows.ledger(trader)

    error = await rpc_error(flows.place(trader, client_order_id="after-suspension", **LIMIT_BUY))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await flows.balances(trader) == balances_before == {"USDT": (D("9520"), D("480"))}
    assert await flows.ledger(trader) == ledger_before
    assert [o.order_id for o in await flows.list_orders(trader)] == [resting.order_id]


# ------------------------------------------------------------------------------------------ 5. WatchOrders


async def test_watch_orders_delivers_every_transition_of_the_callers_orders_and_nothing_else(flows: Flows) -> None:
    alice = await flows.trader({"USDT": "10000"})
    bob = await flows.trader({"USDT": "10000"})
    alice_watch = await Watch(flows.orders, alice.auth).start()
    bob_watch = await Watch(flows.orders, bob.auth).start()
    try:
        order = await flows.place(alice, side=BUY, type=LIMIT, quantity="0.02", price="49000.00")
        await flows.price("49000.00", volume="0.005")
        await flows.wait(alice, order.order_id, lambda o: o.status == pb.ORDER_STATUS_PARTIALLY_FILLED)
        await flows.price(MARKET_PRICE)
        await flows.cancel(alice, order.order_id)
        await alice_watch.until(lambda seen: any(o.status == pb.ORDER_STATUS_CANCELLED for o in seen))

        assert {o.order_id for o in alice_watch.seen} == {order.order_id}
        assert {o.user_id for o in alice_watch.seen} == {alice.user_id}
        statuses = [o.status for o in alice_watch.seen]
        transitions = [s for i, s in enumerate(statuses) if i == 0 or s != statuses[i - 1]]
        assert transitions == [pb.ORDER_STATUS_PENDING, pb.ORDER_STATUS_PARTIALLY_FILLED, pb.ORDER_STATUS_CANCELLED]
        assert any(o.cancel_requested for o in alice_watch.seen)
        assert alice_watch.seen[-1].filled_quantity == "0.00500000"

        # Bob saw nothing of Alice's: the first thing his stream delivers is his own order, then its fill.
        mine = await flows.place(bob, side=BUY, type=MARKET, quantity="0.001")
        await bob_watch.until(lambda seen: any(o.status == pb.ORDER_STATUS_FILLED for o in seen))
        assert {o.order_id for o in bob_watch.seen} == {mine.order_id}
        assert bob_watch.seen[-1].status == pb.ORDER_STATUS_FILLED
    finally:
        await alice_watch.close()
        await bob_watch.close()
