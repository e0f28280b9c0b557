"""A real simulator on a free loopback port, and a plain signed HTTP client written here (not the project's)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from yarl import URL

from services.exchange_simulator import RunningSimulator, SimConfig, start_simulator
from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET


class SignedClient:
    """Signs like Binance documents: percent-encode the parameters, HMAC-SHA256 the exact bytes sent."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str, secret: str):
        self.session = session
        self.base_url = base_url
        self.key = key
        self.secret = secret

    def sign(self, params: dict[str, Any]) -> str:
        query = urlencode(params, quote_via=quote, safe="-_.~")
        signature = hmac.new(self.secret.encode(), query.encode(), hashlib.sha256).hexdigest()
        return f"{query}&signature={signature}"

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        signed: bool = True,
        in_body: bool = False,
    ) -> tuple[int, Any, dict[str, str]]:
        params = dict(params or {})
        headers = {"X-MBX-APIKEY": self.key}
        if signed:
            params.setdefault("timestamp", int(time.time() * 1000))
            encoded = self.sign(params)
        else:
            encoded = urlencode(params)
        url = f"{self.base_url}{path}"
        data = None
        if in_body:
            data = encoded
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif encoded:
            url = f"{url}?{encoded}"
        async with self.session.request(method, URL(url, encoded=True), data=data, headers=headers) as r:
            return r.status, await r.json(content_type=None), dict(r.headers)

    async def raw(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any, dict[str, str]]:
        async with self.session.request(method, URL(url, encoded=True), **kwargs) as r:
            return r.status, await r.json(content_type=None), dict(r.headers)

    async def control(self, path: str, body: dict[str, Any] | None = None) -> Any:
        method = "GET" if body is None else "POST"
        async with self.session.request(method, f"{self.base_url}/sim/v1/{path}", json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start_simulator(SimConfig(port=0))
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(sim: RunningSimulator, session: aiohttp.ClientSession) -> SignedClient:
    return SignedClient(session, sim.base_url, SIM_DEV_API_KEY, SIM_DEV_API_SECRET)


async def away_from_window_edge(period_ms: int, margin_ms: int = 1500) -> None:
    """Wait until the current clock-aligned window has ``margin_ms`` left, so counts in a test share one window."""
    left = period_ms - int(time.time() * 1000) % period_ms
    if left < margin_ms:
        await asyncio.sleep(left / 1000 + 0.05)


def limit_order(**overrides: Any) -> dict[str, Any]:
    params = {
        "symbol": "BTCUSDT",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "0.01000",
        "price": "49000.00",
    }
    params.update(overrides)
    return params
