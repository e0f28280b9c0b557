"""The gateway's use cases in one place for the API, plus its upkeep loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from services.exchange_gateway.domain.errors import ExchangeError
from services.exchange_gateway.domain.model import Anomaly, Execution, ForeignOrder
from services.exchange_gateway.service.executions import ExecutionHub
from services.exchange_gateway.service.market import Market
from services.exchange_gateway.service.orders import Orders
from services.exchange_gateway.service.ports import Exchange, RateStatus
from shared.errors import DomainError, InvalidArgument

log = logging.getLogger("exchange_gateway")


@dataclass(frozen=True)
class Upkeep:
    """How often the background loops run (seconds; 0 turns a loop off)."""

    reconcile_interval_s: float = 60.0
    exchange_info_interval_s: float = 600.0
    time_sync_interval_s: float = 300.0


class GatewayApp:
    """Facade over orders, market data, the execution stream and the rate limiter."""

    def __init__(self, exchange: Exchange, market: Market, orders: Orders, hub: ExecutionHub, upkeep: Upkeep):
        self.exchange = exchange
        self.market = market
        self.orders = orders
        self.hub = hub
        self.upkeep = upkeep
        self._loops: list[asyncio.Task[None]] = []

    def start_upkeep(self) -> None:
        """Start the periodic reconciliation, exchangeInfo refresh and clock sync."""
        jobs: list[tuple[str, float, Callable[[], Awaitable[object]]]] = [
            ("reconcile", self.upkeep.reconcile_interval_s, lambda: self.orders.reconcile("periodic")),
            ("exchange-info", self.upkeep.exchange_info_interval_s, self.market.refresh_rules),
            ("time-sync", self.upkeep.time_sync_interval_s, self.exchange.sync_time),
        ]
        for name, interval, job in jobs:
            if interval > 0:
                self._loops.append(asyncio.create_task(self._every(name, interval, job), name=f"upkeep-{name}"))

    @staticmethod
    async def _every(name: str, interval: float, job: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except (ExchangeError, DomainError) as exc:
                log.warning("upkeep job failed", extra={"job": name, "error": str(exc)})
            except Exception:
                log.exception("upkeep job %s failed", name)

    async def stop_upkeep(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops.clear()

    async def stream_executions(self, after_sequence: int) -> AsyncIterator[Execution]:
        """Executions after ``after_sequence`` from the journal, then live."""
        if after_sequence < 0:
            raise InvalidArgument("after_sequence", "must not be negative")
        async for execution in self.hub.stream(after_sequence):
            yield execution

    def rate_limit_status(self) -> RateStatus:
        return self.exchange.rate_limit_status()

    async def foreign_orders(self) -> list[ForeignOrder]:
        """Every order found on the exchange account that the gateway did not place, oldest first."""
        return await self.orders.journal.foreign_orders()

    async def anomalies(self) -> list[Anomaly]:
        """Every recorded contradiction between the exchange's reports and the journal, oldest first."""
        return await self.orders.journal.anomalies()
