"""Composition root: config -> store -> channels and clients -> use cases -> servicer -> server."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health

from services.order_service.adapters.audit_client import GrpcAuditTrail
from services.order_service.adapters.db import SqlOrderStore
from services.order_service.adapters.gateway_client import GrpcGateway
from services.order_service.adapters.quotes_client import GrpcQuotes
from services.order_service.adapters.user_client import GrpcUsers
from services.order_service.api.auth import Authenticator
from services.order_service.api.servicer import OrderServiceServicer
from services.order_service.config import Config
from services.order_service.domain.model import FeeSchedule, UserLimits
from services.order_service.service.app import OrderApp, Settings
from services.order_service.service.telemetry import OrderStateCollector, OrderTelemetry
from shared.client import open_channel
from shared.db import check_db_url
from shared.logs import setup_logging
from shared.readiness import Readiness, grpc_dependency
from shared.ready import announce_ready
from shared.server import Registration, create_server, wait_for_signal
from shared.telemetry import Telemetry
from trading.order.v1 import order_service_pb2_grpc

SERVICE_NAME = "trading.order.v1.OrderService"
READINESS_INTERVAL = 2.0
"""Seconds between readiness checks (each asks the user service and the gateway for their health)."""

log = logging.getLogger("order_service")


def settings_of(config: Config) -> Settings:
    """The use cases' settings from the service configuration."""
    return Settings(
        market_protection=config.market_protection,
        fees=FeeSchedule(maker=config.fee_maker, taker=config.fee_taker),
        effect_max_attempts=config.effect_max_attempts,
        rules_cache_seconds=config.rules_cache_seconds,
        reconcile_interval=config.reconcile_interval,
        resolve_after=config.resolve_after,
        resume_window=config.resume_window,
        submit_window=config.submit_window,
        report_interval=config.report_interval,
        watch_retention_hours=config.watch_retention_hours,
        user_limits=UserLimits(config.user_orders_per_second, config.user_max_open_orders),
    )


@dataclass
class RunningService:
    """A started order service: where it listens and how to stop it."""

    port: int
    addr: str
    app: OrderApp
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    store: SqlOrderStore
    channels: tuple[grpc.aio.Channel, ...]
    telemetry: Telemetry
    readiness: Readiness
    audit: GrpcAuditTrail | None = None
    stopped: bool = False

    async def stop(self, grace: float = 1.0) -> None:
        """NOT_SERVING, stop the server (grace), stop the background tasks, close channels and the database."""
        if self.stopped:
            return
        self.stopped = True
        await self.readiness.stop()
        await self.health.enter_graceful_shutdown()
        self.app.hub.close()  # end WatchOrders streams so that the server need not wait for them
        if self.app.quotes is not None:
            self.app.quotes.close()  # and WatchTickers streams
        await self.server.stop(grace)
        await self.app.stop(grace)
        if self.audit is not None:
            await self.audit.stop()  # delivers the security events still queued, if it can
        for channel in self.channels:
            await channel.close()
        self.store.close()
        await self.telemetry.close()


async def _open_store(config: Config, telemetry: Telemetry) -> SqlOrderStore:
    """The order store on its database, observed by ``telemetry`` (which is closed if the store cannot open)."""
    try:
        store = SqlOrderStore(check_db_url("ORDER_DB_URL", config.db_url), synchronous=config.db_synchronous)
    except BaseException:
        await telemetry.close()
        raise
    store.group.observer = telemetry.database(store.engine.dialect.name)
    return store


def _authenticator(config: Config, users: GrpcUsers, audit: GrpcAuditTrail) -> Authenticator:
    """Users' API keys, checked by the user service and cached a while; the service tokens never pass as one."""
    return Authenticator(
        users,
        ttl=config.auth_cache_seconds,
        reserved_tokens=(config.service_token, config.admin_token),
        admin_token=config.admin_token,
        audit=audit,
    )


def _servicer(app: OrderApp, auth: Authenticator) -> OrderServiceServicer:
    """The servicer over the use cases its RPCs call."""
    return OrderServiceServicer(
        auth,
        place_order=app.place_order,
        cancel_order=app.cancel_order,
        cancel_all_orders=app.cancel_all_orders,
        queries=app.queries,
        feed=app.feed,
        fair_share=app.fair_share,
        outbox=app.outbox,
        reconciliation=app.reconciliation,
        quotes=app.quotes,
    )


async def start(config: Config, telemetry: Telemetry | None = None) -> RunningService:
    """Open the database, connect to the user service and the gateway, recover, and serve.

    ``telemetry`` (tests) replaces the one built from the configuration (metrics, OTLP endpoint).
    """
    # TLS certificates read, or plaintext checked, before anything starts (shared.tls)
    security = config.tls.server_security("order_service", config.listen_addr, "ORDER_SERVICE_ADDR")
    identity = security.identity
    telemetry = telemetry or Telemetry.create("order_service", otlp_endpoint=config.otlp_endpoint)
    await telemetry.serve_metrics(config.metrics_addr, "ORDER_METRICS_ADDR")
    store = await _open_store(config, telemetry)
    # With TLS: mutual TLS to the services' internal ports, presenting the order service's certificate.
    user_channel = open_channel(config.tls.target("user_service", config.user_service_addr), telemetry, identity)
    gateway_channel = open_channel(
        config.tls.target("exchange_gateway", config.exchange_gateway_addr), telemetry, identity
    )
    users = GrpcUsers(user_channel, config.service_token)
    gateway = GrpcGateway(gateway_channel, config.service_token)
    audit = GrpcAuditTrail(user_channel, config.service_token)  # security events to the user service's trail
    audit.start()
    app = OrderApp(
        store,
        users,
        gateway,
        settings_of(config),
        telemetry=OrderTelemetry(telemetry.registry),
        quotes=GrpcQuotes(gateway_channel, config.service_token),
        audit=audit,
    )
    auth = _authenticator(config, users, audit)
    telemetry.registry.register(OrderStateCollector(app.outbox, app.reconciliation, app.market.listed_assets))
    await app.start()
    registration = Registration(
        SERVICE_NAME, order_service_pb2_grpc.add_OrderServiceServicer_to_server, _servicer(app, auth)
    )
    try:
        server, port, health_servicer, _ = await create_server(
            config.listen_addr,
            [registration],
            access_log=config.access_log,
            telemetry=telemetry,
            security=security,
            max_in_flight=config.max_in_flight,
        )
    except BaseException:
        await app.stop(0)
        await audit.stop(0)
        for channel in (user_channel, gateway_channel):
            await channel.close()
        store.close()
        await telemetry.close()
        raise
    # Ready while both services it needs answer; "" stays SERVING for liveness (see shared.readiness).
    readiness = Readiness(
        health_servicer,
        SERVICE_NAME,
        {"user_service": grpc_dependency(user_channel), "exchange_gateway": grpc_dependency(gateway_channel)},
        registry=telemetry.registry,
        interval=READINESS_INTERVAL,
    )
    readiness.start()
    host = config.listen_addr.rsplit(":", 1)[0]
    return RunningService(
        port=port,
        addr=f"{host}:{port}",
        app=app,
        server=server,
        health=health_servicer,
        store=store,
        channels=(user_channel, gateway_channel),
        telemetry=telemetry,
        readiness=readiness,
        audit=audit,
    )


async def main(config: Config | None = None) -> None:
    """Run the service until SIGTERM or SIGINT, then stop it cleanly."""
    config = config or Config.from_env()
    setup_logging("order_service", config.log_level)
    service = await start(config)
    log.info("listening", extra={"addr": service.addr, "port": service.port})
    announce_ready("order_service", {"grpc_port": service.port, "metrics_port": service.telemetry.metrics_port})
    try:
        await wait_for_signal()
    finally:
        await service.stop(grace=5.0)
    log.info("stopped")
