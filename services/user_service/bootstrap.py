"""Composition root: config -> engine -> transactions, asset list -> use cases -> authorizer -> servicer -> server."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health
from sqlalchemy.engine import Engine

from services.user_service.adapters.gateway_client import GrpcGatewayAssets
from services.user_service.adapters.transactions import SqlTransactions, migrate
from services.user_service.api.auth import SERVICE_PEERS, Authorizer
from services.user_service.api.servicer import UserServiceServicer
from services.user_service.config import Config
from services.user_service.domain.throttle import Throttle, ThrottlePolicy
from services.user_service.service.app import UserApp
from services.user_service.service.assets import FixedAssets, ListedAssets
from services.user_service.service.audit import AuditTrail
from services.user_service.service.guard import AuthenticationGuard
from services.user_service.service.ports import ExchangeAssets
from shared.client import open_channel
from shared.db import create_db_engine
from shared.logs import register_secret, setup_logging
from shared.readiness import Readiness
from shared.ready import announce_ready
from shared.server import Registration, create_server, wait_for_signal
from shared.telemetry import Telemetry
from shared.tls import ServiceIdentity
from trading.user.v1 import user_service_pb2_grpc

SERVICE_NAME = "trading.user.v1.UserService"

log = logging.getLogger("user_service")


@dataclass
class RunningService:
    """A started user service: where it listens, and how to stop it."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    port: int
    addr: str
    users: UserApp
    transactions: SqlTransactions
    assets: ListedAssets
    gateway_channel: grpc.aio.Channel | None = None
    telemetry: Telemetry | None = None
    readiness: Readiness | None = None
    audit: AuditTrail | None = None
    internal_port: int | None = None
    """The mutual TLS port bound for the other services (with TLS only)."""
    _stopped: bool = field(default=False, repr=False)

    async def stop(self, grace: float = 1.0) -> None:
        """Go NOT_SERVING, let running calls finish within ``grace`` seconds, then close the database."""
        if self._stopped:
            return
        self._stopped = True
        if self.readiness is not None:
            await self.readiness.stop()
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.close()

    async def close(self) -> None:
        """Close the gateway channel and the database (after the server stopped)."""
        await self.assets.aclose()
        if self.gateway_channel is not None:
            await self.gateway_channel.close()
        if self.audit is not None:
            await self.audit.stop()  # writes the audit events still in memory
        await self.transactions.aclose()
        if self.telemetry is not None:
            await self.telemetry.close()


def _client_addr(listen_addr: str, port: int) -> str:
    host = listen_addr.rsplit(":", 1)[0] if ":" in listen_addr else listen_addr
    if host in ("", "0.0.0.0", "[::]", "::"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def _migrated_engine(config: Config) -> Engine:
    """The database engine, its schema migrated to the newest (the engine is disposed of if that fails)."""
    engine = create_db_engine(config.db_url, synchronous=config.db_synchronous)
    try:
        migrate(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


def _asset_source(
    config: Config, telemetry: Telemetry, identity: ServiceIdentity | None
) -> tuple[ExchangeAssets, grpc.aio.Channel | None]:
    """The assets as configured, else the gateway's list over a channel (None with configured assets).

    The channel connects lazily: the gateway is asked at the first deposit, not now (it may start later).
    """
    if config.assets:
        return FixedAssets(config.assets), None
    gateway_target = config.tls.target("exchange_gateway", config.exchange_gateway_addr)
    gateway_channel = open_channel(gateway_target, telemetry, identity)
    return GrpcGatewayAssets(gateway_channel, config.service_token), gateway_channel


def _authorizer(config: Config, users: UserApp, audit: AuditTrail, identity: ServiceIdentity | None) -> Authorizer:
    """Who may call what, with failed authentications throttled and recorded in the audit trail."""
    policy = ThrottlePolicy(
        slow_after=config.auth_slow_after,
        ban_after=config.auth_ban_after,
        ban_ms=int(config.auth_ban_seconds * 1000),
    )
    guard = AuthenticationGuard(Throttle(policy), audit)
    # With TLS the service token counts only from the order service's certificate (mutual TLS).
    peers = SERVICE_PEERS if identity is not None else None
    return Authorizer(config.admin_token, config.service_token, users, guard=guard, peers=peers)


async def start(config: Config, telemetry: Telemetry | None = None) -> RunningService:
    """Migrate the database to the newest schema, bind ``config.listen_addr`` (port 0 allowed) and start serving."""
    register_secret(config.admin_token)
    register_secret(config.service_token)
    # TLS certificates read, or plaintext checked, before anything starts (shared.tls)
    security = config.tls.server_security("user_service", config.listen_addr, "USER_SERVICE_ADDR")
    identity = security.identity
    engine = _migrated_engine(config)
    telemetry = telemetry or Telemetry.create("user_service", otlp_endpoint=config.otlp_endpoint)
    transactions = SqlTransactions(engine, max_batch=config.max_batch)
    transactions.group.observer = telemetry.database(engine.dialect.name)
    source, gateway_channel = _asset_source(config, telemetry, identity)
    assets = ListedAssets(source, refresh_seconds=config.assets_refresh_seconds)
    users = UserApp(transactions, assets)
    audit = AuditTrail(transactions, window_ms=int(config.audit_window_seconds * 1000))
    servicer = UserServiceServicer(users, _authorizer(config, users, audit, identity), audit)
    registration = Registration(SERVICE_NAME, user_service_pb2_grpc.add_UserServiceServicer_to_server, servicer)
    try:
        server, port, health_servicer, internal_port = await create_server(
            config.listen_addr,
            [registration],
            access_log=config.access_log,
            telemetry=telemetry,
            security=security,
        )
    except BaseException:
        if gateway_channel is not None:
            await gateway_channel.close()
        transactions.close()
        raise
    running = RunningService(
        server=server,
        health=health_servicer,
        port=port,
        addr=_client_addr(config.listen_addr, port),
        internal_port=internal_port,
        users=users,
        transactions=transactions,
        assets=assets,
        gateway_channel=gateway_channel,
        telemetry=telemetry,
        # Its database is all it needs (the gateway's asset list is cached and only asked for by
        # deposits and withdrawals): ready from start to shutdown, with ``trading_ready`` to show it.
        readiness=Readiness(health_servicer, SERVICE_NAME, {}, registry=telemetry.registry),
        audit=audit,
    )
    audit.start()
    try:
        await telemetry.serve_metrics(config.metrics_addr, "USER_METRICS_ADDR")
    except BaseException:
        await running.stop(0)
        raise
    return running


async def main(config: Config | None = None) -> None:
    """Run the service until SIGTERM or SIGINT."""
    config = config or Config.from_env()
    setup_logging("user_service", config.log_level)
    running = await start(config)
    log.info("listening", extra={"addr": config.listen_addr, "port": running.port})
    metrics_port = running.telemetry.metrics_port if running.telemetry is not None else None
    ports = {"grpc_port": running.port, "internal_port": running.internal_port, "metrics_port": metrics_port}
    announce_ready("user_service", ports)
    await wait_for_signal()
    await running.stop(grace=5.0)
