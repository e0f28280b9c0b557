"""The gateway's use cases in one place for the API, plus its upkeep loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from services.exchange_gateway.domain.errors import ExchangeError
from services.exchange_gateway.domain.model import Anomaly, Execution, ForeignOrder, ForeignPosition
from services.exchange_gateway.service.executions import ExecutionHub
from services.exchange_gateway.service.market import Market
from services.exchange_gateway.service.orders import Orders
from services.exchange_gateway.service.ports import Exchange, RateStatus
from shared.errors import DomainError, InvalidArgument
from shared.paging import Page, decode_page_token, encode_page_token, page_limit

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

    async def foreign_orders(self, size: int, token: str, *, open_only: bool = False) -> Page[ForeignOrder]:
        """A page of the orders found on the exchange account that the gateway did not place, oldest first."""
        limit = page_limit(size)
        scope = f"foreign_orders|{open_only}"
        after = _foreign_position(decode_page_token(token, scope)) if token else None
        rows = await self.orders.journal.page_of_foreign_orders(after, limit + 1, open_only=open_only)
        more = len(rows) > limit
        rows = rows[:limit]
        position = ":".join(str(part) for part in rows[-1].position) if more else ""
        return Page(rows, encode_page_token(position, scope) if more else "")

    async def anomalies(self, size: int, token: str) -> Page[Anomaly]:
        """A page of the recorded contradictions between the exchange's reports and the journal, oldest first."""
        limit = page_limit(size)
        after = decode_page_token(token, "anomalies") if token else 0
        if not isinstance(after, int):
            raise InvalidArgument("page_token", "is not a page token of this list")
        rows = await self.orders.journal.page_of_anomalies(after, limit + 1)
        more = len(rows) > limit
        rows = rows[:limit]
        next_token = encode_page_token(rows[-1][0], "anomalies") if more else ""
        return Page([anomaly for _, anomaly in rows], next_token)


def _foreign_position(position: str | int) -> ForeignPosition:
    """The foreign order a page token points after: "first_seen_ms:symbol:exchange_order_id:client_order_id"."""
    parts = position.split(":", 3) if isinstance(position, str) else []
    try:
        first_seen_ms, symbol, exchange_order_id, client_order_id = parts
        return (int(first_seen_ms), symbol, int(exchange_order_id), client_order_id)
    except ValueError:
        raise InvalidArgument("page_token", "is not a page token of this list") from None
