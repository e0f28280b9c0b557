"""The real simulator (start_simulator) and the real gateway (start) on loopback, with a grpc.aio client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import aiohttp
import grpc
import pytest
from yarl import URL

from services.exchange_gateway.bootstrap import RunningService, start
from services.exchange_gateway.config import Config
from services.exchange_simulator.app import RunningSimulator, SimConfig, start_simulator
from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
from trading.gateway.v1 import gateway_pb2, gateway_service_pb2, gateway_service_pb2_grpc

SERVICE_TOKEN = "svc-token-for-tests-0001"
ADMIN_TOKEN = "adm-token-for-tests-0001"
SERVICE = (("authorization", f"Bearer {SERVICE_TOKEN}"),)
ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
pb = gateway_service_pb2


class Sim:
    """The simulator plus its control endpoints."""

    def __init__(self, running: RunningSimulator, session: aiohttp.ClientSession):
        self.running = running
        self.session = session

    @property
    def exchange(self) -> Any:
        return self.running.exchange

    async def post(self, path: str, body: dict[str, Any]) -> Any:
        async with self.session.post(f"{self.running.base_url}/sim/v1/{path}", json=body) as resp:
            data = await resp.json()
            assert resp.status == 200, data
            return data

    async def get(self, path: str, **query: str) -> Any:
        async with self.session.get(f"{self.running.base_url}/sim/v1/{path}", params=query) as resp:
            return json.loads(await resp.text())

    async def stats(self) -> dict[str, Any]:
        return await self.get("stats")

    async def orders(self, **query: str) -> list[dict[str, Any]]:
        return await self.get("orders", **query)

    async def price(self, symbol: str, price: str, volume: str | None = None) -> Any:
        body = {"symbol": symbol, "price": price}
        if volume is not None:
            body["volume"] = volume
        return await self.post("price", body)

    async def signed(self, method: str, path: str, params: dict[str, str]) -> tuple[int, Any]:
        """A Binance API request signed with the development HMAC key: another program on the same account."""
        query = urlencode({**params, "timestamp": str(int(time.time() * 1000))}, quote_via=quote, safe="-_.~")
        signature = hmac.new(SIM_DEV_API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
        url = URL(f"{self.running.base_url}{path}?{query}&signature={signature}", encoded=True)
        async with self.session.request(method, url, headers={"X-MBX-APIKEY": SIM_DEV_API_KEY}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def place_directly(self, **params: str) -> dict[str, Any]:
        """Place an order on the account without the gateway (as a person on the web site would)."""
        status, body = await self.signed("POST", "/api/v3/order", params)
        assert status == 200, body
        return body

    async def restart(self) -> None:
        """Stop the simulator and start a fresh one on the same port: an exchange that forgot every order.

        The new one's ids start from its clock, past the old one's; a test of reused ids sets them back
        with the reset control.
        """
        port = self.running.port
        await self.running.stop()
        self.running = await start_simulator(SimConfig(port=port))


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    running = await start_simulator(SimConfig())
    session = aiohttp.ClientSession()
    simulator = Sim(running, session)
    yield simulator
    await session.close()
    await simulator.running.stop()  # the one running now (a test may have restarted it)


@dataclass
class Gateway:
    running: RunningService
    channel: grpc.aio.Channel
    stub: gateway_service_pb2_grpc.ExchangeGatewayStub

    async def submit(self, cid: str, *, timeout: float = 5.0, **fields: Any) -> gateway_pb2.ExchangeOrder:
        request = limit_request(cid, **fields)
        response = await self.stub.SubmitOrder(request, metadata=SERVICE, timeout=timeout)
        return response.order

    async def get(self, cid: str, *, refresh: bool = False) -> gateway_pb2.ExchangeOrder:
        response = await self.stub.GetOrder(pb.GetOrderRequest(client_order_id=cid, refresh=refresh), metadata=SERVICE)
        return response.order

    async def cancel(self, cid: str, *, timeout: float = 5.0) -> gateway_pb2.ExchangeOrder:
        response = await self.stub.CancelOrder(
            pb.CancelOrderRequest(client_order_id=cid), metadata=SERVICE, timeout=timeout
        )
        return response.order

    async def executions(self, after: int, count: int, timeout: float = 10.0) -> list[gateway_pb2.Execution]:
        """The next ``count`` executions after ``after`` (fails if they do not come in time)."""
        call = self.stub.StreamExecutions(pb.StreamExecutionsRequest(after_sequence=after), metadata=SERVICE)
        result: list[gateway_pb2.Execution] = []
        try:
            async with asyncio.timeout(timeout):
                async for message in call:
                    result.append(message.execution)
                    if len(result) >= count:
                        break
        finally:
            call.cancel()
        return result

    async def foreign_orders(self, page_size: int = 0, *, open_only: bool = False) -> list[gateway_pb2.ForeignOrder]:
        """Every page of ListForeignOrders with the admin token (a read-only RPC)."""
        found: list[gateway_pb2.ForeignOrder] = []
        token = ""
        while True:
            request = pb.ListForeignOrdersRequest(page_size=page_size, page_token=token, open_only=open_only)
            response = await self.stub.ListForeignOrders(request, metadata=ADMIN)
            found.extend(response.orders)
            if not (token := response.next_page_token):
                return found

    async def anomalies(self, page_size: int = 0) -> list[gateway_pb2.Anomaly]:
        """Every page of ListAnomalies with the admin token (a read-only RPC)."""
        found: list[gateway_pb2.Anomaly] = []
        token = ""
        while True:
            request = pb.ListAnomaliesRequest(page_size=page_size, page_token=token)
            response = await self.stub.ListAnomalies(request, metadata=ADMIN)
            found.extend(response.anomalies)
            if not (token := response.next_page_token):
                return found

    def record_requests(self) -> list[tuple[str, str, dict[str, str]]]:
        """From now on, every REST request the gateway sends: (method, path, parameters)."""
        sent: list[tuple[str, str, dict[str, str]]] = []
        transport = self.running.internals.rest.transport
        send = transport.request

        async def request(method: str, url: str, **kwargs: Any) -> Any:
            parts = urlsplit(url)
            sent.append((method, parts.path, dict(parse_qsl(parts.query))))
            return await send(method, url, **kwargs)

        transport.request = request  # type: ignore[method-assign]
        return sent

    async def all_executions(self, settle: float = 0.5) -> list[gateway_pb2.Execution]:
        """Everything journaled so far (waits ``settle`` seconds of quiet)."""
        call = self.stub.StreamExecutions(pb.StreamExecutionsRequest(after_sequence=0), metadata=SERVICE)
        result: list[gateway_pb2.Execution] = []
        try:
            while True:
                try:
                    async with asyncio.timeout(settle):
                        message = await call.read()
                except TimeoutError:
                    return result
                if message is grpc.aio.EOF:
                    return result
                result.append(message.execution)
        finally:
            call.cancel()


def limit_request(
    cid: str,
    *,
    symbol: str = "BTCUSDT",
    side: int = gateway_pb2.SIDE_BUY,
    type: int = gateway_pb2.ORDER_TYPE_LIMIT,
    quantity: str = "0.01",
    price: str = "49000.00",
    stop_price: str = "",
    time_in_force: int = gateway_pb2.TIME_IN_FORCE_UNSPECIFIED,
) -> gateway_service_pb2.SubmitOrderRequest:
    return pb.SubmitOrderRequest(
        client_order_id=cid,
        symbol=symbol,
        side=side,
        type=type,
        quantity=quantity,
        price=price,
        stop_price=stop_price,
        time_in_force=time_in_force,
    )


StartGateway = Callable[..., Awaitable[Gateway]]


def sim_gateway_config(sim: Sim, tmp_path: Path, **fields: Any) -> Config:
    """A gateway on ``sim`` with its journal in ``tmp_path``, reconciling only when asked."""
    return Config(
        listen_addr="127.0.0.1:0",
        db_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        binance_env="sim",
        base_url=sim.running.base_url,
        ws_api_url=sim.running.ws_api_url,
        service_token=SERVICE_TOKEN,
        admin_token=ADMIN_TOKEN,
        log_level="WARNING",
        reconcile_interval_s=0,
        db_synchronous="NORMAL",
        **fields,
    )


@contextlib.asynccontextmanager
async def launcher(config: Config) -> AsyncIterator[StartGateway]:
    """Start gateways on ``config`` with the overrides each call names; close and stop them all on the way out."""
    started: list[Gateway] = []

    async def launch(**overrides: Any) -> Gateway:
        running = await start(replace(config, **overrides))
        channel = grpc.aio.insecure_channel(running.addr)
        gateway = Gateway(running, channel, gateway_service_pb2_grpc.ExchangeGatewayStub(channel))
        started.append(gateway)
        return gateway

    try:
        yield launch
    finally:
        for gateway in started:
            await gateway.channel.close()
            await gateway.running.stop(grace=0.5)


@pytest.fixture
async def start_gateway(sim: Sim, tmp_path: Path) -> AsyncIterator[StartGateway]:
    """Start a gateway on the simulator (same database file each time, so a second start is a restart)."""
    async with launcher(sim_gateway_config(sim, tmp_path)) as launch:
        yield launch


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Gateway:
    return await start_gateway()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` until it is true (fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def early_in_window(needed_s: float, window_s: float = 10.0) -> None:
    """Sleep into the next ORDERS window unless at least ``needed_s`` are left in this one."""
    position = time.time() % window_s
    if window_s - position < needed_s:
        await asyncio.sleep(window_s - position + 0.3)
