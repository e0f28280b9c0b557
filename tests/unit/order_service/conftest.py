"""A harness that runs the order service's use cases over the fakes and a SQLite file in tmp_path.

``Harness.crash()`` stops everything the way a SIGKILL would (no clean-up, nothing flushed) and
``Harness.restart()`` builds a fresh app over the same database file and the same fakes (the other
services survive the crash), which then recovers.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from services.order_service.adapters.db import SqlOrderStore
from services.order_service.domain.model import Caller, Order, OrderType, Side
from services.order_service.domain.placement import NewOrderRequest
from services.order_service.service.app import OrderApp, Settings
from services.order_service.service.deadline import Deadline

from .fakes import Crash, FakeGateway, FakeUsers

ALICE = "usr_alice"
BOB = "usr_bob"
ALICE_KEY = "tk_alice_secret_0000000000000000"
BOB_KEY = "tk_bob_secret_00000000000000000000"

SETTINGS = Settings(
    reconcile_interval=3600, resolve_after=0.0, cancel_retry_after=0.0, expiry_retry=0.2, stream_max_backoff=0.1
)


def limit_buy(quantity: str = "0.01000", price: str = "49000.00", **extra: Any) -> NewOrderRequest:
    """A LIMIT BUY of BTCUSDT (below the fake's 50000 market by default)."""
    return NewOrderRequest(
        symbol="BTCUSDT", side=Side.BUY, type=OrderType.LIMIT, quantity=quantity, price=price, **extra
    )


@dataclass
class Harness:
    path: Path
    users: FakeUsers
    gateway: FakeGateway
    app: OrderApp
    settings: Settings

    @property
    def alice(self) -> Caller:
        return self.users.keys[ALICE_KEY]

    @property
    def bob(self) -> Caller:
        return self.users.keys[BOB_KEY]

    async def place(self, request: NewOrderRequest, caller: Caller | None = None) -> Order:
        return await self.app.place_order(caller or self.alice, request, Deadline.after(5))

    async def applied(self) -> None:
        """Wait until the order service's cursor reaches the last execution the gateway emitted."""
        async with asyncio.timeout(10):
            while self.app.executions.cursor < len(self.gateway.executions):
                await asyncio.sleep(0.005)

    async def settle(self) -> None:
        """Wait until every answer and execution is recorded and the outbox is empty."""
        while self.app.core.recording:
            await asyncio.wait([task for _, task in self.app.core.recording.values()])
        await self.applied()
        await self.app.outbox.idle()

    async def order(self, order_id: str) -> Order:
        order = await self.app.store.get_order(order_id)
        assert order is not None
        return order

    async def crash(self) -> None:
        """Stop like SIGKILL: cancel every task, flush nothing, run no clean-up."""
        app = self.app
        tasks = [*app._tasks, *app.core.placing.values(), *app.outbox._tasks.values(), *app.expiry._running.values()]
        if app.outbox._flusher is not None:
            tasks.append(app.outbox._flusher)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        app.store.close()
        # Tasks that died of the Crash are reported ("exception never retrieved") when collected;
        # collect them now rather than at a random moment later (CPython 3.11 can trip over a report
        # issued from inside the compiler).
        gc.collect()

    async def restart(self) -> OrderApp:
        """A new process over the same database file; it recovers on start."""
        self.app = OrderApp(SqlOrderStore(f"sqlite:///{self.path}"), self.users, self.gateway, self.settings)
        await self.app.start()
        await asyncio.wait_for(self.app.reconciler.recovered.wait(), 5)
        return self.app


def _quiet_crashes(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    if isinstance(context.get("exception"), Crash):
        return  # the simulated process death, already asserted by the test
    loop.default_exception_handler(context)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    asyncio.get_running_loop().set_exception_handler(_quiet_crashes)
    users = FakeUsers()
    users.add_user(ALICE, ALICE_KEY)
    users.add_user(BOB, BOB_KEY)
    users.deposit(ALICE, "USDT", "100000")
    users.deposit(ALICE, "BTC", "1")
    users.deposit(BOB, "USDT", "100000")
    gateway = FakeGateway()
    path = tmp_path / "orders.db"
    app = OrderApp(SqlOrderStore(f"sqlite:///{path}"), users, gateway, SETTINGS)
    await app.start()
    h = Harness(path, users, gateway, app, SETTINGS)
    try:
        yield h
    finally:
        await h.app.stop(0.5)
        h.app.store.close()
