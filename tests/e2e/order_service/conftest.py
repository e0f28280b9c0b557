"""The four real processes, as `make run` starts them, on ports they bind themselves with temporary databases.

``ProcessStack`` starts the simulator, the gateway, the user service and the order service with
``python -m services.<name>`` on port 0, reads the ports each bound from its ready file and gives them to
the ones started after it, waits until each answers (gRPC health SERVING, the simulator's ping), can
SIGKILL and restart a process on the same database (and the port it had, which the others know), and
kills everything in teardown.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from tests.support import (
    ANY_PORT,
    SERVICES,
    Proc,
    await_ready,
    running_in_order,
    spawn_collected,
    wait_answering,
)
from trading.order.v1 import order_service_pb2_grpc
from trading.user.v1 import user_service_pb2, user_service_pb2_grpc

METRICS = {
    "user_service": "USER_METRICS_ADDR",
    "exchange_gateway": "GATEWAY_METRICS_ADDR",
    "order_service": "ORDER_METRICS_ADDR",
}


@dataclass
class ProcessStack:
    var: Path
    env: dict[str, str]
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def admin_token(self) -> str:
        return self.env["TRADING_ADMIN_TOKEN"]

    def addr(self, name: str) -> str:
        return self.env[SERVICES[name][0]]

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.env['SIM_PORT']}"

    def metrics_url(self, name: str) -> str:
        """Where the service serves Prometheus /metrics."""
        return f"http://{self.env[METRICS[name]]}/metrics"

    def start(self, name: str) -> Proc:
        ready_file = self.var / f"{name}.ready"
        proc = spawn_collected(name, self.env, ready_file)
        self.procs[name] = proc
        try:
            await_ready(name, proc.process, ready_file, self.env, proc.logs)
            wait_answering(proc, self.env, grpc.insecure_channel)
        except BaseException:
            self.kill(name)
            raise
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.get(name)
        if proc is not None:
            proc.stop(sig)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.kill(name, signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(proc.logs() for proc in self.procs.values())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def processes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProcessStack]:
    """The stack on SQLite files, then on PostgreSQL (one database per service on the session's server)."""
    var = tmp_path_factory.mktemp("order-e2e")
    if request.param == "sqlite":
        urls = {name: f"sqlite:///{var}/{name}.db" for name in ("order", "user", "gateway")}
    else:
        server = request.getfixturevalue("postgres_server")
        urls = {name: server.create_database(f"e2e_{name}") for name in ("order", "user", "gateway")}
    env = {
        **os.environ,
        **ANY_PORT,
        **{variable: "127.0.0.1:0" for variable in METRICS.values()},
        "ORDER_DB_URL": urls["order"],
        "USER_DB_URL": urls["user"],
        "GATEWAY_DB_URL": urls["gateway"],
        "TRADING_ADMIN_TOKEN": f"adm_{secrets.token_hex(16)}",
        "TRADING_SERVICE_TOKEN": f"svc_{secrets.token_hex(16)}",
        "BINANCE_ENV": "sim",
        "LOG_LEVEL": "WARNING",
        "ORDER_AUTH_CACHE_SECONDS": "0.5",
        "ORDER_RESOLVE_AFTER": "1",
        "ORDER_RECONCILE_INTERVAL": "1",
        "ORDER_SUBMIT_WINDOW": "3",
    }
    for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "BINANCE_BASE_URL", "BINANCE_WS_API_URL", "SIM_RANDOM_WALK"):
        env.pop(name, None)
    stack = ProcessStack(var, env)
    try:
        yield from running_in_order(stack)
    finally:
        for name in list(stack.procs):
            stack.kill(name)


class StackClients:
    """Clients of a running ``ProcessStack``: the user service (as admin), the order service, and the
    simulator's control API."""

    def __init__(self, stack: ProcessStack):
        self.stack = stack
        self.admin = (("authorization", f"Bearer {stack.admin_token}"),)
        self.user_channel = grpc.aio.insecure_channel(stack.addr("user_service"))
        self.users = user_service_pb2_grpc.UserServiceStub(self.user_channel)
        self.order_channel = grpc.aio.insecure_channel(stack.addr("order_service"))
        self.orders = order_service_pb2_grpc.OrderServiceStub(self.order_channel)
        self.http = aiohttp.ClientSession()

    async def close(self) -> None:
        await self.order_channel.close()
        await self.user_channel.close()
        await self.http.close()

    async def user_balances(self, user_id: str) -> dict[str, tuple[Decimal, Decimal]]:
        """(available, locked) per asset."""
        response = await self.users.GetBalances(
            user_service_pb2.GetBalancesRequest(user_id=user_id), metadata=self.admin
        )
        return {b.asset: (Decimal(b.available), Decimal(b.locked)) for b in response.balances}

    async def price(self, price: str, volume: str | None = None) -> None:
        """Move the simulator's BTCUSDT price (with ``volume`` available at it)."""
        body: dict[str, Any] = {"symbol": "BTCUSDT", "price": price}
        if volume is not None:
            body["volume"] = volume
        async with self.http.post(f"{self.stack.sim_url}/sim/v1/price", json=body) as response:
            assert response.status == 200, await response.text()
