"""Composition root: config -> journal -> Binance client -> use cases -> gRPC server.

``start(config)`` opens the journal, syncs the clock, reads exchangeInfo (rules and rate limits),
starts the user data stream (whose every (re)connect reconciles every order that is not final)
and the market data streams (which connect at the first symbol someone asks about), binds the server
and returns a ``RunningService``; ``main()`` runs it until SIGTERM / SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import grpc
from grpc_health.v1 import health

from services.exchange_gateway.adapters.audit_client import GrpcAuditTrail
from services.exchange_gateway.adapters.binance.clock import ExchangeClock
from services.exchange_gateway.adapters.binance.exchange import BinanceExchange, event_from_report
from services.exchange_gateway.adapters.binance.market_rest import MarketRest
from services.exchange_gateway.adapters.binance.market_stream import MarketStream
from services.exchange_gateway.adapters.binance.rate_limiter import RateLimiter
from services.exchange_gateway.adapters.binance.rest import BinanceRestClient
from services.exchange_gateway.adapters.binance.signing import Signer, load_signer
from services.exchange_gateway.adapters.binance.telemetry import ExchangeTelemetry
from services.exchange_gateway.adapters.binance.transport import AiohttpTransport
from services.exchange_gateway.adapters.binance.user_stream import UserDataStream
from services.exchange_gateway.adapters.journal import SqlJournal
from services.exchange_gateway.api.auth import SERVICE_PEERS, TokenAuthInterceptor
from services.exchange_gateway.api.servicer import ExchangeGatewayServicer
from services.exchange_gateway.config import Config, default_stream_url
from services.exchange_gateway.domain.errors import ExchangeError
from services.exchange_gateway.service.app import GatewayApp, Upkeep
from services.exchange_gateway.service.executions import ExecutionHub
from services.exchange_gateway.service.market import Market
from services.exchange_gateway.service.orders import Orders
from services.exchange_gateway.service.quotes import Quotes
from services.exchange_gateway.telemetry import GatewayStateCollector, readiness_checks
from shared.client import open_channel
from shared.db import Database, check_db_url, create_db_engine
from shared.errors import DomainError, Unavailable
from shared.logs import register_secret, setup_logging
from shared.readiness import Readiness
from shared.ready import announce_ready
from shared.server import Registration, create_server, wait_for_signal
from shared.telemetry import Telemetry
from shared.tls import ServiceIdentity
from trading.gateway.v1 import gateway_service_pb2_grpc

SERVICE_NAME = "trading.gateway.v1.ExchangeGateway"
READINESS_INTERVAL = 0.5
"""Seconds between readiness checks (in memory, except a weight-1 probe while the exchange is silent)."""

log = logging.getLogger("exchange_gateway")


@dataclass(frozen=True)
class Internals:
    """The started parts that tests observe or drive where no RPC or metric reaches.

    ``orders`` reconciles on demand and takes user data stream reports; ``journal.transact`` waits
    for the writes queued before it; the user data stream counts its subscriptions and events;
    the REST client's clock can be skewed and its transport watched; the market data shows which
    symbols it follows and whether their streams are live.
    """

    orders: Orders
    journal: SqlJournal
    user_stream: UserDataStream
    rest: BinanceRestClient
    clock: ExchangeClock
    quotes: Quotes
    market_stream: MarketStream


@dataclass
class _Parts:
    """Everything ``RunningService.stop`` ends, in the order it ends them."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    gateway: GatewayApp
    quotes: Quotes
    stream_task: asyncio.Task[None]
    market_tasks: list[asyncio.Task[None]]
    audit: GrpcAuditTrail | None
    user_channel: grpc.aio.Channel | None
    limiter: RateLimiter
    journal: SqlJournal
    session: aiohttp.ClientSession
    db: Database
    readiness: Readiness | None = None


class RunningService:
    """A started gateway: its address and ports, its telemetry, and ``stop``."""

    def __init__(
        self,
        port: int,
        addr: str,
        internal_port: int | None,
        internals: Internals,
        parts: _Parts,
        telemetry: Telemetry | None = None,
    ):
        self.port = port
        self.addr = addr
        self.internal_port = internal_port
        """The mutual TLS port bound for the other services (with TLS only)."""
        self.internals = internals
        """For tests only (see ``Internals``)."""
        self.telemetry = telemetry
        self._parts = parts
        self._stopped = False

    async def stop(self, grace: float = 1.0) -> None:
        """Stop serving (NOT_SERVING first), finish requests already sent, close everything."""
        if self._stopped:
            return
        self._stopped = True
        parts = self._parts
        if parts.readiness is not None:
            await parts.readiness.stop()
        await parts.health.enter_graceful_shutdown()
        parts.gateway.hub.close()  # ends StreamExecutions so the server need not wait for them
        parts.quotes.close()  # ends WatchTickers likewise
        await parts.server.stop(grace)
        for task in (parts.stream_task, *parts.market_tasks):
            task.cancel()
        for task in (parts.stream_task, *parts.market_tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await parts.gateway.stop_upkeep()
        await parts.gateway.orders.close(grace)
        if parts.audit is not None:
            await parts.audit.stop()  # delivers the security events still queued, if it can
        if parts.user_channel is not None:
            await parts.user_channel.close()
        parts.limiter.close()
        await parts.journal.close()
        await parts.session.close()
        await asyncio.to_thread(parts.db.close)
        if self.telemetry is not None:
            await self.telemetry.close()
        log.info("stopped")


async def _until_ready(what: str, attempt: Callable[[], Awaitable[object]], timeout: float) -> None:
    """Retry ``attempt()`` with back-off until it succeeds or ``timeout`` seconds have passed."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + timeout
    delay = 0.2
    while True:
        try:
            await attempt()
            return
        except (ExchangeError, DomainError, aiohttp.ClientError, OSError) as exc:
            if loop.time() + delay > give_up:
                raise Unavailable(f"cannot reach the exchange ({what}): {exc}", reason="EXCHANGE_UNAVAILABLE") from exc
            log.warning("exchange not reachable yet", extra={"step": what, "error": str(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 3.0)


def _register_secrets(config: Config) -> None:
    """The exchange credentials and the tokens, masked wherever a log line would show them."""
    for secret in (
        config.api_key,
        config.api_secret,
        config.private_key_passphrase,
        config.service_token,
        config.admin_token,
    ):
        register_secret(secret)


async def _open_journal(config: Config, telemetry: Telemetry) -> tuple[Database, SqlJournal]:
    """The journal on its database, migrated (the engine is disposed of if the migration fails)."""
    engine = create_db_engine(check_db_url("GATEWAY_DB_URL", config.db_url), synchronous=config.db_synchronous)
    db = Database(engine, name="gateway")
    journal = SqlJournal(db)
    journal.observer = telemetry.database(engine.dialect.name)
    try:
        await asyncio.to_thread(journal.migrate)
    except BaseException:
        engine.dispose()
        raise
    return db, journal


def _http_session(config: Config) -> aiohttp.ClientSession:
    """The connection pool to the exchange (REST and both WebSocket streams)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=config.http_pool_size, keepalive_timeout=30.0, ttl_dns_cache=300),
        headers={"User-Agent": "trading-core-exchange-gateway/1"},
    )


def _audit_trail(
    config: Config,
    telemetry: Telemetry,
    identity: ServiceIdentity | None,
    orders: Orders,
    rest: BinanceRestClient,
) -> tuple[GrpcAuditTrail | None, grpc.aio.Channel | None]:
    """Security events (foreign orders, the exchange's 429/418) to the user service's audit trail.

    The channel connects lazily, so the user service may start later. With TLS: its internal port.
    """
    if not config.user_service_addr:
        return None, None
    user_target = config.tls.target("user_service", config.user_service_addr)
    user_channel = open_channel(user_target, telemetry, identity)
    audit = GrpcAuditTrail(user_channel, config.service_token)
    audit.start()
    orders.foreign.audit = audit
    rest.on_rate_limited = audit.rate_limited
    return audit, user_channel


async def _start_user_stream(
    config: Config,
    session: aiohttp.ClientSession,
    *,
    signer: Signer,
    clock: ExchangeClock,
    limiter: RateLimiter,
    rest: BinanceRestClient,
    orders: Orders,
) -> tuple[UserDataStream, asyncio.Task[None]]:
    """The user data stream, running; each (re)connect reconciles every order that is not final.

    Start waits a little for the first connection; without it the orders are reconciled by REST meanwhile.
    """
    stream = UserDataStream(
        session,
        url=config.ws_api_url,
        api_key=config.api_key,
        signer=signer,
        clock=clock,
        limiter=limiter,
        resync=lambda: rest.sync_time(samples=1),
        recv_window_ms=config.recv_window_ms,
        heartbeat_s=config.ws_heartbeat_s,
        reconnect_max_s=config.ws_reconnect_max_s,
    )
    stream_task = asyncio.create_task(
        stream.run(orders.on_event, lambda: orders.reconcile("user data stream (re)connected")), name="user-stream"
    )
    try:
        await asyncio.wait_for(stream.connected.wait(), timeout=min(10.0, config.startup_timeout_s))
    except TimeoutError:
        log.warning("user data stream not connected yet; reconciling by REST meanwhile")
        orders.spawn(orders.reconcile("start without user data stream"), name="reconcile-start")
    return stream, stream_task


def _start_market_data(
    config: Config, session: aiohttp.ClientSession, clock: ExchangeClock, rest: BinanceRestClient, market: Market
) -> tuple[MarketStream, Quotes, list[asyncio.Task[None]]]:
    """The market data streams (they connect at the first symbol someone asks about) and their upkeep."""
    market_stream = MarketStream(
        session,
        url=config.stream_url or default_stream_url(config.binance_env, config.base_url),
        clock=clock,
        # Late binding: ``quotes`` is built next, over this stream.
        on_update=lambda update: quotes.on_update(update),  # noqa: PLW0108
        on_live=lambda symbols, live: quotes.on_live(symbols, live),  # noqa: PLW0108
        heartbeat_s=config.ws_heartbeat_s,
        reconnect_max_s=config.ws_reconnect_max_s,
    )
    quotes = Quotes(
        market_stream,
        MarketRest(rest),
        market.rules_for,
        rest_ttl_ms=config.market_data_ttl_ms,
        idle_ms=round(config.market_data_idle_s * 1000),
    )
    market_tasks = [
        asyncio.create_task(market_stream.run(), name="market-stream"),
        asyncio.create_task(quotes.run(), name="market-data-upkeep"),
    ]
    return market_stream, quotes, market_tasks


async def start(config: Config, telemetry: Telemetry | None = None) -> RunningService:
    """Start the gateway described by ``config`` and return it running (``telemetry``: tests' own)."""
    config.validate()
    _register_secrets(config)
    signer = load_signer(config.api_secret, config.private_key_file, config.private_key_passphrase)
    # TLS certificates read, or plaintext checked, before anything starts (shared.tls)
    security = config.tls.server_security("exchange_gateway", config.listen_addr, "EXCHANGE_GATEWAY_ADDR")
    identity = security.identity
    telemetry = telemetry or Telemetry.create("exchange_gateway", otlp_endpoint=config.otlp_endpoint)

    db, journal = await _open_journal(config, telemetry)
    session = _http_session(config)
    clock = ExchangeClock()
    limiter = RateLimiter(
        clock.now, margin=config.rate_limit_margin, guard_ms=config.window_guard_ms, local=clock.local
    )
    exchange_telemetry = ExchangeTelemetry(telemetry.registry, telemetry.tracer)
    rest = BinanceRestClient(
        AiohttpTransport(session, exchange_telemetry),
        base_url=config.base_url,
        api_key=config.api_key,
        signer=signer,
        clock=clock,
        limiter=limiter,
        recv_window_ms=config.recv_window_ms,
        timeout_s=config.request_timeout_s,
    )
    exchange = BinanceExchange(rest, deadline_margin_ms=config.deadline_margin_ms)
    market = Market(exchange, price_ttl_ms=config.price_ttl_ms)
    try:
        await _until_ready("time", rest.sync_time, config.startup_timeout_s)
        await _until_ready("exchangeInfo", market.refresh_rules, config.startup_timeout_s)
        pending = await journal.open()
    except BaseException:
        await session.close()
        await journal.close()
        await asyncio.to_thread(db.close)
        raise
    hub = ExecutionHub(journal.executions_after, last_sequence=journal.last_sequence)
    journal.on_commit = hub.publish
    orders = Orders(journal, exchange, market, event_from_report, cancel_foreign=config.foreign_orders == "cancel")
    journal.on_anomalies = orders.anomalies_found
    journal.on_foreign = orders.foreign.changed
    audit, user_channel = _audit_trail(config, telemetry, identity, orders, rest)
    gateway = GatewayApp(
        exchange,
        market,
        orders,
        hub,
        Upkeep(config.reconcile_interval_s, config.exchange_info_interval_s, config.time_sync_interval_s),
    )
    stream, stream_task = await _start_user_stream(
        config, session, signer=signer, clock=clock, limiter=limiter, rest=rest, orders=orders
    )
    gateway.start_upkeep()
    market_stream, quotes, market_tasks = _start_market_data(config, session, clock, rest, market)

    registration = Registration(
        SERVICE_NAME,
        gateway_service_pb2_grpc.add_ExchangeGatewayServicer_to_server,
        ExchangeGatewayServicer(gateway, quotes),
    )
    try:
        server, port, health_servicer, internal_port = await create_server(
            config.listen_addr,
            [registration],
            interceptors=[
                TokenAuthInterceptor(
                    service_token=config.service_token,
                    admin_token=config.admin_token,
                    # With TLS the service token counts only from the calling services' certificates.
                    peers=SERVICE_PEERS if identity is not None else None,
                )
            ],
            telemetry=telemetry,
            security=security,
        )
    except BaseException:
        stream_task.cancel()
        for task in market_tasks:
            task.cancel()
        await gateway.stop_upkeep()
        await orders.close(0)
        if audit is not None:
            await audit.stop(0)
        if user_channel is not None:
            await user_channel.close()
        await journal.close()
        await session.close()
        await asyncio.to_thread(db.close)
        raise
    host = config.listen_addr.rsplit(":", 1)[0] or "127.0.0.1"
    parts = _Parts(
        server=server,
        health=health_servicer,
        gateway=gateway,
        quotes=quotes,
        stream_task=stream_task,
        market_tasks=market_tasks,
        audit=audit,
        user_channel=user_channel,
        limiter=limiter,
        journal=journal,
        session=session,
        db=db,
    )
    internals = Internals(
        orders=orders,
        journal=journal,
        user_stream=stream,
        rest=rest,
        clock=clock,
        quotes=quotes,
        market_stream=market_stream,
    )
    running = RunningService(port, f"{host}:{port}", internal_port, internals, parts, telemetry)
    telemetry.registry.register(GatewayStateCollector(limiter, stream, journal, orders))
    # Ready while the exchange answers, does not hold us off and streams our executions; "" stays
    # SERVING for liveness (see shared.readiness).
    parts.readiness = Readiness(
        health_servicer,
        SERVICE_NAME,
        readiness_checks(limiter, exchange_telemetry, rest, stream),
        registry=telemetry.registry,
        interval=READINESS_INTERVAL,
    )
    try:
        await telemetry.serve_metrics(config.metrics_addr, "GATEWAY_METRICS_ADDR")
    except BaseException:
        await running.stop(0)
        raise
    parts.readiness.start()
    log.info(
        "exchange gateway listening",
        extra={
            "addr": running.addr,
            "binance_env": config.binance_env,
            "base_url": config.base_url,
            "key_type": signer.kind,
            "open_orders_loaded": len(pending),
            "last_sequence": journal.last_sequence,
            "clock_offset_ms": round(clock.offset_ms, 1),
        },
    )
    return running


async def main(config: Config | None = None) -> None:
    """Run the service until SIGTERM or SIGINT."""
    config = config or Config.from_env()
    setup_logging("exchange_gateway", config.log_level)
    running = await start(config)
    metrics_port = running.telemetry.metrics_port if running.telemetry is not None else None
    ports = {"grpc_port": running.port, "internal_port": running.internal_port, "metrics_port": metrics_port}
    announce_ready("exchange_gateway", ports)
    try:
        await wait_for_signal()
    finally:
        await running.stop(grace=5.0)
