"""The whole stack in one process: simulator, user service, gateway and order service, each on port 0.

Every service is started through its own ``start()`` with a SQLite file in tmp_path; the test talks to
them over real gRPC channels exactly as a client would (admin token for the user service, a user's API
key for the order service) and moves the market through the simulator's control endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from services.exchange_gateway.bootstrap import start as start_gateway
from services.exchange_gateway.config import Config as GatewayConfig
from services.exchange_simulator.app import RunningSimulator, SimConfig, start_simulator
from services.order_service.bootstrap import RunningService
from services.order_service.bootstrap import start as start_orders
from services.order_service.config import Config as OrderConfig
from services.user_service.bootstrap import start as start_users
from services.user_service.config import Config as UserConfig
from shared.telemetry import Telemetry
from tests.integration.in_process import gateway_config
from trading.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from trading.user.v1 import user_pb2, user_service_pb2, user_service_pb2_grpc

SERVICE_TOKEN = "svc-token-order-tests-0001"
ADMIN_TOKEN = "adm-token-order-tests-0001"
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
D = Decimal
FINAL = {
    order_pb2.ORDER_STATUS_FILLED,
    order_pb2.ORDER_STATUS_CANCELLED,
    order_pb2.ORDER_STATUS_REJECTED,
    order_pb2.ORDER_STATUS_EXPIRED,
}
_counter = [0]


def status_name(status: int) -> str:
    return order_pb2.OrderStatus.Name(status)


@dataclass
class Trader:
    """A user of the brokerage with an API key and a client of the order service."""

    user_id: str
    api_key: str
    key_id: str
    stub: order_service_pb2_grpc.OrderServiceStub

    @property
    def auth(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    async def place(self, **fields: Any) -> order_pb2.Order:
        fields.setdefault("symbol", "BTCUSDT")
        response = await self.stub.PlaceOrder(
            order_service_pb2.PlaceOrderRequest(**fields), metadata=self.auth, timeout=10
        )
        return response.order

    async def get(self, order_id: str) -> order_pb2.Order:
        response = await self.stub.GetOrder(
            order_service_pb2.GetOrderRequest(order_id=order_id), metadata=self.auth, timeout=5
        )
        return response.order

    async def cancel(self, order_id: str) -> order_pb2.Order:
        response = await self.stub.CancelOrder(
            order_service_pb2.CancelOrderRequest(order_id=order_id), metadata=self.auth, timeout=10
        )
        return response.order

    async def fills(self, order_id: str) -> list[order_pb2.Fill]:
        response = await self.stub.ListFills(
            order_service_pb2.ListFillsRequest(order_id=order_id), metadata=self.auth, timeout=5
        )
        return list(response.fills)

    async def orders(self, **filters: Any) -> order_service_pb2.ListOrdersResponse:
        return await self.stub.ListOrders(order_service_pb2.ListOrdersRequest(**filters), metadata=self.auth, timeout=5)

    async def wait(
        self, order_id: str, until: Callable[[order_pb2.Order], bool] | None = None, timeout: float = 15.0
    ) -> order_pb2.Order:
        """Poll GetOrder until ``until`` (default: a final status) holds."""
        check = until or (lambda o: o.status in FINAL)
        deadline = time.monotonic() + timeout
        while True:
            order = await self.get(order_id)
            if check(order):
                return order
            if time.monotonic() > deadline:
                raise AssertionError(f"order {order_id} stuck at {status_name(order.status)}: {order}")
            await asyncio.sleep(0.05)


@dataclass
class Stack:
    """The four running services and clients of them."""

    tmp: Path
    sim: RunningSimulator
    users_running: Any
    gateway_running: Any
    orders_running: RunningService
    http: aiohttp.ClientSession
    user_channel: grpc.aio.Channel
    order_channel: grpc.aio.Channel
    order_config: OrderConfig
    users: user_service_pb2_grpc.UserServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.users = user_service_pb2_grpc.UserServiceStub(self.user_channel)

    @property
    def order_stub(self) -> order_service_pb2_grpc.OrderServiceStub:
        return order_service_pb2_grpc.OrderServiceStub(self.order_channel)

    async def trader(self, deposits: dict[str, str] | None = None, *, name: str = "trader") -> Trader:
        """Create a user (admin), deposit, create an API key."""
        _counter[0] += 1
        username = f"{name}{_counter[0]}"
        created = await self.users.CreateUser(
            user_service_pb2.CreateUserRequest(username=username, email=f"{username}@example.com"), metadata=ADMIN
        )
        user_id = created.user.user_id
        for asset, amount in (deposits if deposits is not None else {"USDT": "10000"}).items():
            await self.users.Deposit(
                user_service_pb2.DepositRequest(
                    user_id=user_id, asset=asset, amount=amount, request_id=f"dep-{user_id}-{asset}"
                ),
                metadata=ADMIN,
            )
        key = await self.users.CreateApiKey(
            user_service_pb2.CreateApiKeyRequest(user_id=user_id, label="tests"), metadata=ADMIN
        )
        return Trader(user_id, key.api_key, key.key_id, self.order_stub)

    async def balances(self, user_id: str) -> dict[str, tuple[Decimal, Decimal]]:
        response = await self.users.GetBalances(user_service_pb2.GetBalancesRequest(user_id=user_id), metadata=ADMIN)
        return {b.asset: (D(b.available), D(b.locked)) for b in response.balances}

    async def ledger(self, user_id: str) -> list[user_pb2.LedgerEntry]:
        """Every ledger entry of the user, oldest first."""
        entries: list[user_pb2.LedgerEntry] = []
        token = ""
        while True:
            response = await self.users.ListLedgerEntries(
                user_service_pb2.ListLedgerEntriesRequest(user_id=user_id, page_size=1000, page_token=token),
                metadata=ADMIN,
            )
            entries.extend(response.entries)
            token = response.next_page_token
            if not token:
                return list(reversed(entries))

    async def set_status(self, user_id: str, status: int) -> None:
        await self.users.UpdateUserStatus(
            user_service_pb2.UpdateUserStatusRequest(user_id=user_id, status=status), metadata=ADMIN
        )

    async def sim_post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.http.post(f"{self.sim.base_url}/sim/v1/{path}", json=body) as response:
            data = await response.json()
            assert response.status == 200, data
            return data

    async def price(self, price: str, *, symbol: str = "BTCUSDT", volume: str | None = None) -> Any:
        """Move the simulated market (resting orders that the price reaches trade at once)."""
        body: dict[str, Any] = {"symbol": symbol, "price": price}
        if volume is not None:
            body["volume"] = volume
        return await self.sim_post("price", body)

    async def settled(self, timeout: float = 10.0) -> None:
        """Wait until the order service has no side effect left to perform (the ledger is complete)."""
        app = self.orders_running.app
        await app.outbox.idle(timeout)

    async def restart_orders(self, between: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop the order service, run ``between`` while it is down, start it again on the same database."""
        await self.order_channel.close()
        await self.orders_running.stop(0.5)
        if between is not None:
            await between()
        self.orders_running = await start_orders(self.order_config)
        self.order_config = replace(self.order_config, listen_addr=self.orders_running.addr)
        self.order_channel = grpc.aio.insecure_channel(self.orders_running.addr)


def gateway_service_config(tmp_path: Path, sim: RunningSimulator, **fields: Any) -> GatewayConfig:
    """The gateway of an in-process stack, trading on ``sim``."""
    return gateway_config(tmp_path, sim, service_token=SERVICE_TOKEN, admin_token=ADMIN_TOKEN, **fields)


def user_service_config(tmp_path: Path, **fields: Any) -> UserConfig:
    """The user service of an in-process stack, with no access log."""
    return UserConfig(
        listen_addr="127.0.0.1:0",
        db_url=f"sqlite:///{tmp_path / 'users.db'}",
        admin_token=ADMIN_TOKEN,
        service_token=SERVICE_TOKEN,
        log_level="WARNING",
        db_synchronous="NORMAL",
        access_log=False,
        **fields,
    )


def order_service_config(tmp_path: Path, users_addr: str, gateway_addr: str, **fields: Any) -> OrderConfig:
    """The order service of an in-process stack: quick to re-authenticate, reconcile and resolve."""
    return OrderConfig(
        service_token=SERVICE_TOKEN,
        admin_token=ADMIN_TOKEN,
        listen_addr="127.0.0.1:0",
        db_url=f"sqlite:///{tmp_path / 'orders.db'}",
        user_service_addr=users_addr,
        exchange_gateway_addr=gateway_addr,
        auth_cache_seconds=0.3,
        reconcile_interval=1.0,
        resolve_after=2.0,
        db_synchronous="NORMAL",
        **fields,
    )


@contextlib.asynccontextmanager
async def order_service_on(
    tmp_path: Path,
    sim: RunningSimulator,
    users: Any,
    gateway: Any,
    order_config: OrderConfig,
    telemetry: Telemetry | None = None,
) -> AsyncIterator[Stack]:
    """Start the order service on the running ``users`` and ``gateway`` and connect clients to it.

    On the way out every client is closed and all four services are stopped, the order service first.
    """
    orders = await start_orders(order_config, telemetry)
    order_config = replace(order_config, listen_addr=orders.addr)
    http = aiohttp.ClientSession()
    user_channel = grpc.aio.insecure_channel(users.addr)
    order_channel = grpc.aio.insecure_channel(orders.addr)
    s = Stack(tmp_path, sim, users, gateway, orders, http, user_channel, order_channel, order_config)
    try:
        yield s
    finally:
        await s.order_channel.close()
        await s.user_channel.close()
        await http.close()
        await s.orders_running.stop(0.5)
        await gateway.stop(0.5)
        await s.users_running.stop(0.5)  # the one running now: a test may restart it
        await sim.stop()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    sim = await start_simulator(SimConfig(port=0, log_level="WARNING"))
    gateway = await start_gateway(gateway_service_config(tmp_path, sim))
    # deposits only in the assets the exchange lists
    users = await start_users(user_service_config(tmp_path, exchange_gateway_addr=gateway.addr))
    async with order_service_on(
        tmp_path, sim, users, gateway, order_service_config(tmp_path, users.addr, gateway.addr)
    ) as s:
        yield s
