"""The whole stack in one process, each service with its own ``Telemetry``: an in-memory span exporter
and its metrics served on a free port, so tests can follow one request's spans and read each /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import grpc
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from services.exchange_gateway.bootstrap import start as start_gateway
from services.exchange_gateway.config import Config as GatewayConfig
from services.exchange_simulator.app import SimConfig, start_simulator
from services.order_service.bootstrap import start as start_orders
from services.order_service.config import Config as OrderConfig
from services.user_service.bootstrap import start as start_users
from services.user_service.config import Config as UserConfig
from shared.telemetry import Telemetry
from tests.integration.order_service.conftest import ADMIN_TOKEN, SERVICE_TOKEN, Stack

METRICS_ON_A_FREE_PORT = "127.0.0.1:0"


@dataclass
class Observed:
    """The stack, the spans every service finished, and each service's /metrics."""

    stack: Stack
    exporter: InMemorySpanExporter
    telemetry: dict[str, Telemetry]
    user_config: UserConfig

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    async def scrape(self, service: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """The service's /metrics over HTTP, parsed by prometheus_client: {(sample name, labels): value}."""
        server = self.telemetry[service].metrics_server
        assert server is not None
        async with self.stack.http.get(server.url) as response:
            assert response.status == 200
            text = await response.text()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[Observed]:
    exporter = InMemorySpanExporter()
    telemetry = {
        name: Telemetry.create(name, span_processors=[SimpleSpanProcessor(exporter)])
        for name in ("order_service", "user_service", "exchange_gateway")
    }
    sim = await start_simulator(SimConfig(port=0, log_level="WARNING"))
    gateway = await start_gateway(
        GatewayConfig(
            listen_addr="127.0.0.1:0",
            db_url=f"sqlite:///{tmp_path / 'gateway.db'}",
            binance_env="sim",
            base_url=sim.base_url,
            ws_api_url=sim.ws_api_url,
            service_token=SERVICE_TOKEN,
            admin_token=ADMIN_TOKEN,
            log_level="WARNING",
            db_synchronous="NORMAL",
            metrics_addr=METRICS_ON_A_FREE_PORT,
        ),
        telemetry["exchange_gateway"],
    )
    user_config = UserConfig(
        listen_addr="127.0.0.1:0",
        db_url=f"sqlite:///{tmp_path / 'users.db'}",
        admin_token=ADMIN_TOKEN,
        service_token=SERVICE_TOKEN,
        log_level="WARNING",
        db_synchronous="NORMAL",
        access_log=False,
        exchange_gateway_addr=gateway.addr,
        metrics_addr=METRICS_ON_A_FREE_PORT,
    )
    users = await start_users(user_config, telemetry["user_service"])
    user_config = replace(user_config, listen_addr=users.addr, metrics_addr="")
    order_config = OrderConfig(
        service_token=SERVICE_TOKEN,
        admin_token=ADMIN_TOKEN,
        listen_addr="127.0.0.1:0",
        db_url=f"sqlite:///{tmp_path / 'orders.db'}",
        user_service_addr=users.addr,
        exchange_gateway_addr=gateway.addr,
        auth_cache_seconds=0.3,
        reconcile_interval=1.0,
        resolve_after=2.0,
        db_synchronous="NORMAL",
        metrics_addr=METRICS_ON_A_FREE_PORT,
    )
    orders = await start_orders(order_config, telemetry["order_service"])
    order_config = replace(order_config, listen_addr=orders.addr)
    http = aiohttp.ClientSession()
    user_channel = grpc.aio.insecure_channel(users.addr)
    order_channel = grpc.aio.insecure_channel(orders.addr)
    stack = Stack(tmp_path, sim, users, gateway, orders, http, user_channel, order_channel, order_config)
    try:
        yield Observed(stack, exporter, telemetry, user_config)
    finally:
        await stack.order_channel.close()
        await stack.user_channel.close()
        await http.close()
        await stack.orders_running.stop(0.5)
        await gateway.stop(0.5)
        await stack.users_running.stop(0.5)
        await sim.stop()
