"""The whole stack in one process, each service with its own ``Telemetry``: an in-memory span exporter
and its metrics served on a free port, so tests can follow one request's spans and read each /metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from services.exchange_gateway.bootstrap import start as start_gateway
from services.exchange_simulator.app import SimConfig, start_simulator
from services.user_service.bootstrap import start as start_users
from services.user_service.config import Config as UserConfig
from shared.telemetry import Telemetry
from tests.integration.order_service.conftest import (
    Stack,
    gateway_service_config,
    order_service_config,
    order_service_on,
    user_service_config,
)
from tests.metrics import scrape

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
        return await scrape(self.stack.http, server.url)


@pytest.fixture
async def observed(tmp_path: Path) -> AsyncIterator[Observed]:
    exporter = InMemorySpanExporter()
    telemetry = {
        name: Telemetry.create(name, span_processors=[SimpleSpanProcessor(exporter)])
        for name in ("order_service", "user_service", "exchange_gateway")
    }
    sim = await start_simulator(SimConfig(port=0, log_level="WARNING"))
    gateway_config = gateway_service_config(tmp_path, sim, metrics_addr=METRICS_ON_A_FREE_PORT)
    gateway = await start_gateway(gateway_config, telemetry["exchange_gateway"])
    user_config = user_service_config(tmp_path, exchange_gateway_addr=gateway.addr, metrics_addr=METRICS_ON_A_FREE_PORT)
    users = await start_users(user_config, telemetry["user_service"])
    user_config = replace(user_config, listen_addr=users.addr, metrics_addr="")
    order_config = order_service_config(tmp_path, users.addr, gateway.addr, metrics_addr=METRICS_ON_A_FREE_PORT)
    async with order_service_on(tmp_path, sim, users, gateway, order_config, telemetry["order_service"]) as stack:
        yield Observed(stack, exporter, telemetry, user_config)
