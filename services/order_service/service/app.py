"""The order service's use cases and background tasks, wired over the three ports.

``OrderApp`` builds them (bootstrap hands the servicer the ones its RPCs call; tests build it over
fakes). ``start`` loads the outbox, then runs the execution consumer, the expiry timers, recovery
and the periodic reconciler as tasks; ``stop`` ends them (work in flight is finished by the next start).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from services.order_service.domain.lifecycle import DEFAULT_FEES
from services.order_service.domain.model import FeeSchedule, UserLimits
from services.order_service.domain.states import ACTIVE_STATES
from services.order_service.service.cancellation import CancelAllOrders, CancelOrder
from services.order_service.service.core import Core
from services.order_service.service.executions import ExecutionConsumer
from services.order_service.service.expiry import ExpiryScheduler
from services.order_service.service.limits import DEFAULT_USER_LIMITS, FairShare
from services.order_service.service.market import MarketData
from services.order_service.service.outbox import Outbox
from services.order_service.service.placement import PlaceOrder
from services.order_service.service.ports import AuditPort, GatewayPort, OrderStore, UserPort
from services.order_service.service.queries import Queries
from services.order_service.service.quotes import Quotes, QuoteSource
from services.order_service.service.reconciliation import ClientMoneyReconciliation
from services.order_service.service.recovery import Reconciler
from services.order_service.service.telemetry import OrderTelemetry
from services.order_service.service.watch import OrderFeed, WatchHub
from shared.timeutil import now_ms

log = logging.getLogger("order_service")


@dataclass(frozen=True)
class Settings:
    """Tunables of the use cases (the service Config maps onto these)."""

    market_protection: Decimal = Decimal("0.05")
    fees: FeeSchedule = DEFAULT_FEES
    effect_max_attempts: int = 5
    effect_first_backoff: float = 0.05
    rules_cache_seconds: float = 60.0
    price_cache_seconds: float = 0.5
    reconcile_interval: float = 5.0
    resolve_after: float = 5.0
    resume_window: float = 60.0
    submit_window: float = 25.0
    cancel_retry_after: float = 1.0
    report_interval: float = 300.0
    watch_retention_hours: float = 24.0
    user_limits: UserLimits = DEFAULT_USER_LIMITS
    expiry_retry: float = 2.0
    watch_queue_size: int = 1000
    execution_batch: int = 200
    outbox_concurrency: int = 64
    stream_max_backoff: float = 2.0


class OrderApp:
    """All use cases and background tasks of the order service."""

    def __init__(
        self,
        store: OrderStore,
        users: UserPort,
        gateway: GatewayPort,
        settings: Settings | None = None,
        *,
        clock: Callable[[], int] = now_ms,
        telemetry: OrderTelemetry | None = None,
        quotes: QuoteSource | None = None,
        audit: AuditPort | None = None,
    ):
        self.settings = settings = settings or Settings()
        self.telemetry = telemetry = telemetry if telemetry is not None else OrderTelemetry()
        self.store = store
        self.users = users
        self.gateway = gateway
        self.hub = WatchHub(settings.watch_queue_size)
        self.feed = OrderFeed(self.hub, store)
        self.outbox = Outbox(
            store,
            users,
            concurrency=settings.outbox_concurrency,
            max_attempts=settings.effect_max_attempts,
            first_backoff=settings.effect_first_backoff,
            telemetry=telemetry,
        )
        self.core = Core(store, self.hub, self.outbox, clock, telemetry)
        self.market = MarketData(
            gateway, rules_ttl=settings.rules_cache_seconds, price_ttl=settings.price_cache_seconds
        )
        # Market data for users (ListSymbols, GetTicker, GetOrderBook, WatchTickers); None in an app built
        # without a source of tickers and books, whose market data RPCs are then UNAVAILABLE.
        self.quotes: Quotes | None = None
        if quotes is not None:
            self.quotes = Quotes(gateway, quotes, symbols_ttl=settings.rules_cache_seconds)
        self.expiry = ExpiryScheduler(self.core, gateway, retry_delay=settings.expiry_retry)
        self.fair_share = FairShare(store, settings.user_limits)
        self.core.on_final = self.fair_share.closed
        self.place_order = PlaceOrder(
            self.core,
            users,
            gateway,
            self.market,
            self.expiry,
            fair_share=self.fair_share,
            protection=settings.market_protection,
        )
        self.cancel_order = CancelOrder(self.core, gateway)
        self.cancel_all_orders = CancelAllOrders(self.core, self.cancel_order)
        self.queries = Queries(store, self.core.recorded)
        self.executions = ExecutionConsumer(
            self.core,
            gateway,
            batch_size=settings.execution_batch,
            max_backoff=settings.stream_max_backoff,
            fees=settings.fees,
        )
        self.reconciler = Reconciler(
            self.core,
            users,
            gateway,
            self.expiry,
            self.market,
            interval=settings.reconcile_interval,
            resolve_after=settings.resolve_after,
            resume_window=settings.resume_window,
            submit_window=settings.submit_window,
            cancel_retry_after=settings.cancel_retry_after,
        )
        self.reconciliation = ClientMoneyReconciliation(
            users, gateway, self.outbox, interval=settings.report_interval, audit=audit
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Load the outbox and the fair-share counts, then start consuming, expiring, recovering and reconciling."""
        await self.fair_share.load(await self.store.active_orders(ACTIVE_STATES))
        await self.outbox.start()
        self._tasks = [
            asyncio.create_task(self.executions.run(), name="executions"),
            asyncio.create_task(self.expiry.run(), name="expiry"),
            asyncio.create_task(self._recover_then_reconcile(), name="reconciler"),
            asyncio.create_task(self.market.preload(), name="preload-rules"),
            asyncio.create_task(self.reconciliation.run(), name="client-money-reconciliation"),
            asyncio.create_task(self._prune_updates(), name="prune-order-updates"),
        ]

    async def _recover_then_reconcile(self) -> None:
        try:
            await self.reconciler.recover()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("recovery at start failed; the periodic reconciler carries on")
        await self.reconciler.run()

    async def _prune_updates(self, every: float = 600.0) -> None:
        """Forget recorded WatchOrders updates older than the retention, every ``every`` seconds."""
        while True:
            try:
                cutoff = self.core.clock() - int(self.settings.watch_retention_hours * 3_600_000)
                pruned = await self.store.prune_updates(cutoff)
                if pruned:
                    log.info("pruned old order updates", extra={"count": pruned})
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not prune old order updates; will try again")
            await asyncio.sleep(every)

    async def stop(self, grace: float = 1.0) -> None:
        """Let placements in flight finish (within ``grace``), stop the tasks, flush the outbox."""
        placing = list(self.core.placing.values())
        if placing:
            await asyncio.wait(placing, timeout=grace)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.expiry.stop()
        await self.outbox.stop(grace)
        self.hub.close()
        if self.quotes is not None:
            self.quotes.close()
