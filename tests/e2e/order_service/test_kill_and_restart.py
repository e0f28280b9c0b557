"""SIGKILL the order service between placement and fill: after a restart the order completes exactly once.

Real processes (``python -m services.<name>``), real sockets, the simulator moving the market while the
order service is dead. Exactness is checked on the user service's balances and ledger: every trade is
debited, credited and charged once, and what was reserved and not spent comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import signal
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest

from trading.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from trading.user.v1 import user_pb2, user_service_pb2

from .conftest import ProcessStack, StackClients

pytestmark = pytest.mark.e2e

D = Decimal
pb = order_pb2
FINAL = {pb.ORDER_STATUS_FILLED, pb.ORDER_STATUS_CANCELLED, pb.ORDER_STATUS_REJECTED, pb.ORDER_STATUS_EXPIRED}


class Clients(StackClients):
    """Clients of the running processes (the order service's re-opened after it restarts)."""

    async def reconnect_orders(self) -> None:
        await self.order_channel.close()
        self.order_channel = grpc.aio.insecure_channel(self.stack.addr("order_service"))
        self.orders = order_service_pb2_grpc.OrderServiceStub(self.order_channel)

    async def new_user(self, usdt: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        name = f"e2e{secrets.token_hex(4)}"
        user = await self.users.CreateUser(
            user_service_pb2.CreateUserRequest(username=name, email=f"{name}@example.com"), metadata=self.admin
        )
        user_id = user.user.user_id
        await self.users.Deposit(
            user_service_pb2.DepositRequest(user_id=user_id, asset="USDT", amount=usdt, request_id=f"d-{name}"),
            metadata=self.admin,
        )
        key = await self.users.CreateApiKey(
            user_service_pb2.CreateApiKeyRequest(user_id=user_id, label="e2e"), metadata=self.admin
        )
        return user_id, (("authorization", f"Bearer {key.api_key}"),)

    async def ledger(self, user_id: str) -> list[user_pb2.LedgerEntry]:
        response = await self.users.ListLedgerEntries(
            user_service_pb2.ListLedgerEntriesRequest(user_id=user_id, page_size=1000), metadata=self.admin
        )
        return list(response.entries)

    async def get(self, auth: Any, order_id: str) -> pb.Order:
        response = await self.orders.GetOrder(order_service_pb2.GetOrderRequest(order_id=order_id), metadata=auth)
        return response.order

    async def wait(self, auth: Any, order_id: str, statuses: set[int], timeout: float = 30.0) -> pb.Order:
        deadline = time.monotonic() + timeout
        while True:
            try:
                order = await self.get(auth, order_id)
                if order.status in statuses:
                    return order
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} did not reach {statuses}\n{self.stack.logs()}")
            await asyncio.sleep(0.1)

    async def settled(self, user_id: str, predicate, timeout: float = 20.0) -> dict[str, tuple[Decimal, Decimal]]:  # type: ignore[no-untyped-def]
        """Poll the balances until ``predicate`` holds (the outbox performs settlements after the fill)."""
        deadline = time.monotonic() + timeout
        while True:
            balances = await self.user_balances(user_id)
            if predicate(balances):
                return balances
            if time.monotonic() > deadline:
                raise AssertionError(f"balances never settled: {balances}\n{self.stack.logs()}")
            await asyncio.sleep(0.1)


@pytest.fixture
async def clients(processes: ProcessStack) -> AsyncIterator[Clients]:
    c = Clients(processes)
    try:
        yield c
    finally:
        await c.close()


def kinds(entries: list[user_pb2.LedgerEntry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        name = user_pb2.LedgerEntryKind.Name(entry.kind).removeprefix("LEDGER_ENTRY_KIND_")
        counts[name] = counts.get(name, 0) + 1
    return counts


async def test_sigkill_between_placement_and_fill_completes_the_order_exactly_once(
    processes: ProcessStack, clients: Clients
) -> None:
    user_id, auth = await clients.new_user("10000")
    placed = await clients.orders.PlaceOrder(
        order_service_pb2.PlaceOrderRequest(
            symbol="BTCUSDT",
            side=pb.ORDER_SIDE_BUY,
            type=pb.ORDER_TYPE_LIMIT,
            quantity="0.02",
            price="49000.00",
            client_order_id="e2e-kill-1",
        ),
        metadata=auth,
    )
    order_id = placed.order.order_id
    assert placed.order.status == pb.ORDER_STATUS_PENDING
    assert await clients.user_balances(user_id) == {"USDT": (D("9020"), D("980"))}

    processes.kill("order_service")  # SIGKILL: no clean-up, nothing flushed
    await clients.price("49000.00", volume="0.01")  # a partial fill while it is dead...
    await clients.price("48990.00")  # ...and the rest
    processes.start("order_service")
    await clients.reconnect_orders()

    filled = await clients.wait(auth, order_id, {pb.ORDER_STATUS_FILLED})
    assert (filled.filled_quantity, filled.average_price) == ("0.02000000", "49000.00000000")
    assert (filled.commission, filled.commission_asset) == ("0.00002000", "BTC")
    fills = await clients.orders.ListFills(order_service_pb2.ListFillsRequest(order_id=order_id), metadata=auth)
    assert len(fills.fills) == 2
    balances = await clients.settled(user_id, lambda b: b.get("USDT", (0, 1))[1] == 0 and "BTC" in b)
    assert balances == {"USDT": (D("9020"), D("0")), "BTC": (D("0.01998"), D("0"))}
    entries = await clients.ledger(user_id)
    counts = kinds(entries)
    assert counts["RESERVE"] == 1
    assert counts["TRADE_DEBIT"] == counts["TRADE_CREDIT"] == counts["FEE"] == 2

    # Kill it again and restart: nothing is applied a second time.
    processes.kill("order_service")
    processes.start("order_service")
    await clients.reconnect_orders()
    again = await clients.wait(auth, order_id, {pb.ORDER_STATUS_FILLED})
    assert again.filled_quantity == "0.02000000"
    await asyncio.sleep(1.5)  # give a (wrong) replay every chance to happen
    assert kinds(await clients.ledger(user_id)) == counts
    assert await clients.user_balances(user_id) == balances


async def test_sigkill_in_the_middle_of_placements_loses_and_doubles_nothing(
    processes: ProcessStack, clients: Clients
) -> None:
    user_id, auth = await clients.new_user("10000")

    async def place(i: int) -> str | None:
        with contextlib.suppress(grpc.aio.AioRpcError):
            response = await clients.orders.PlaceOrder(
                order_service_pb2.PlaceOrderRequest(
                    symbol="BTCUSDT",
                    side=pb.ORDER_SIDE_BUY,
                    type=pb.ORDER_TYPE_LIMIT,
                    quantity="0.001",
                    price="48000.00",
                    client_order_id=f"burst-{i}",
                ),
                metadata=auth,
                timeout=10,
            )
            return response.order.order_id
        return None

    tasks = [asyncio.create_task(place(i)) for i in range(12)]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    processes.kill("order_service")  # some placements are between two steps now
    await asyncio.gather(*tasks)
    processes.start("order_service")
    await clients.reconnect_orders()

    # Recovery finishes every placement left in flight (rejected if it never reached the exchange).
    async def in_flight() -> list[pb.Order]:
        page = await clients.orders.ListOrders(order_service_pb2.ListOrdersRequest(page_size=100), metadata=auth)
        return list(page.orders)

    deadline = time.monotonic() + 30
    while True:
        orders = await in_flight()
        pending_without_exchange = [
            o for o in orders if o.status == pb.ORDER_STATUS_PENDING and not o.exchange_order_id
        ]
        if not pending_without_exchange:
            break
        assert time.monotonic() < deadline, f"still in flight: {pending_without_exchange}\n{processes.logs()}"
        await asyncio.sleep(0.2)

    # Every order that lives is reserved exactly once; the rest released: locked == sum of live reservations.
    live = [o for o in orders if o.status == pb.ORDER_STATUS_PENDING]
    balances = await clients.settled(user_id, lambda b: b["USDT"][1] == D("48") * len(live))
    assert balances["USDT"] == (D("10000") - D("48") * len(live), D("48") * len(live))

    for order in live:
        await clients.orders.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=order.order_id), metadata=auth)
    for order in live:
        await clients.wait(auth, order.order_id, FINAL)
    assert await clients.settled(user_id, lambda b: b["USDT"] == (D("10000"), D("0")))
    entries = await clients.ledger(user_id)
    counts = kinds(entries)
    assert counts.get("TRADE_DEBIT", 0) == 0
    assert counts.get("RESERVE", 0) == counts.get("RELEASE", 0)  # every reservation released exactly once


async def test_sigterm_ends_watch_streams_and_exits_cleanly(processes: ProcessStack, clients: Clients) -> None:
    _, auth = await clients.new_user("100")
    watch = clients.orders.WatchOrders(order_service_pb2.WatchOrdersRequest(), metadata=auth)
    await watch.initial_metadata()
    proc = processes.procs["order_service"]
    proc.process.send_signal(signal.SIGTERM)
    with pytest.raises(grpc.aio.AioRpcError) as ended:
        async with asyncio.timeout(10):
            async for _ in watch:
                pass
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.to_thread(proc.process.wait, 10) == 0, proc.logs()
    processes.start("order_service")
