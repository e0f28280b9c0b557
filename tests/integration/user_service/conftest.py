"""Fixtures: the real user service on 127.0.0.1 port 0 over a SQLite file in tmp_path, and a gRPC client.

``service`` and ``client`` run on SQLite; ``engine_service`` and ``engine_client`` on each engine in turn
(``db_engine`` in tests/conftest.py), for the money paths that must hold on PostgreSQL too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from services.user_service.bootstrap import RunningService, start
from services.user_service.config import Config
from tests.integration.user_service.helpers import ADMIN_TOKEN, SERVICE_TOKEN, Client

ASSETS = ("BTC", "USDT", "ETH", "BNB")
"""What USER_ASSETS fixes for these tests, which run the user service without a gateway."""


def make_config(db: Path | str) -> Config:
    """The service's configuration over a SQLite file (a path) or any database URL."""
    return Config(
        listen_addr="127.0.0.1:0",
        db_url=db if isinstance(db, str) else f"sqlite:///{db}",
        admin_token=ADMIN_TOKEN,
        service_token=SERVICE_TOKEN,
        log_level="INFO",
        assets=ASSETS,
    )


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "user_service.db"


@pytest.fixture
async def service(db_path: Path) -> AsyncIterator[RunningService]:
    running = await start(make_config(db_path))
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


@pytest.fixture
async def client(service: RunningService) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(service.addr) as channel:
        yield Client(channel, service)


@pytest.fixture
async def engine_service(new_db_url) -> AsyncIterator[RunningService]:
    running = await start(make_config(new_db_url("users")))
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


@pytest.fixture
async def engine_client(engine_service: RunningService) -> AsyncIterator[Client]:
    async with grpc.aio.insecure_channel(engine_service.addr) as channel:
        yield Client(channel, engine_service)
