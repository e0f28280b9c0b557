"""Deposits and withdrawals only in assets the exchange lists, as the gateway reports them.

Without USER_ASSETS the user service asks the gateway (ListSymbolRules) at the first deposit, not at
start, so it starts whether the gateway is up or not. Here: the real gateway over the real simulator;
the gateway unreachable; and a one-RPC gateway whose list changes and which then goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest

from services.exchange_gateway.bootstrap import start as start_gateway
from services.exchange_simulator.app import SimConfig, start_simulator
from services.user_service.bootstrap import RunningService, start
from tests.integration.in_process import gateway_config
from tests.integration.user_service.conftest import make_config
from tests.integration.user_service.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    SERVICE_TOKEN,
    Client,
    bad_field,
    db_state,
    rich_status,
)
from tests.support import closed_port
from trading.gateway.v1 import gateway_pb2, gateway_service_pb2, gateway_service_pb2_grpc
from trading.user.v1 import user_service_pb2 as pb


async def deposit_status(client: Client, user: str, asset: str, request_id: str) -> tuple[grpc.StatusCode, Any]:
    request = pb.DepositRequest(user_id=user, asset=asset, amount="1", request_id=request_id)
    return await rich_status(client.stub.Deposit(request, metadata=ADMIN))


async def test_deposits_follow_what_the_real_gateway_lists_asked_at_the_first_deposit(tmp_path: Path) -> None:
    async with AsyncExitStack() as stack:
        sim = await start_simulator(SimConfig(port=0, log_level="WARNING"))
        stack.push_async_callback(sim.stop)
        gateway = await start_gateway(
            gateway_config(tmp_path, sim, service_token=SERVICE_TOKEN, admin_token=ADMIN_TOKEN)
        )
        stack.push_async_callback(gateway.stop, 0.5)
        config = replace(make_config(tmp_path / "users.db"), assets=(), exchange_gateway_addr=gateway.addr)
        users = await start(config)  # after the gateway, as the launcher starts them
        stack.push_async_callback(users.stop, 0.5)
        channel = await stack.enter_async_context(grpc.aio.insecure_channel(users.addr))
        client = Client(channel, users)
        ann = await client.new_user("ann")
        for asset in ("BTC", "ETH", "BNB", "USDT"):
            assert (await deposit_status(client, ann, asset, f"d-{asset}"))[0] == grpc.StatusCode.OK, asset
        before = db_state(users)
        code, status = await deposit_status(client, ann, "DOGE", "d-DOGE")
        assert (code, bad_field(status)) == (grpc.StatusCode.INVALID_ARGUMENT, "asset")
        assert status is not None and "DOGE" in status.message
        code, status = await rich_status(
            client.stub.Withdraw(
                pb.WithdrawRequest(user_id=ann, asset="DOGE", amount="1", request_id="w-DOGE"), metadata=ADMIN
            )
        )
        assert (code, bad_field(status)) == (grpc.StatusCode.INVALID_ARGUMENT, "asset")
        assert db_state(users) == before
        assert set(await client.balances(ann)) == {"BTC", "ETH", "BNB", "USDT"}


async def test_with_the_gateway_unreachable_and_no_user_assets_a_deposit_is_unavailable(tmp_path: Path) -> None:
    with closed_port() as port:  # connections to it are refused
        config = replace(make_config(tmp_path / "users.db"), assets=(), exchange_gateway_addr=f"127.0.0.1:{port}")
        users = await start(config)
        try:
            async with grpc.aio.insecure_channel(users.addr) as channel:
                client = Client(channel, users)
                ann = await client.new_user("ann")
                before = db_state(users)
                code, status = await deposit_status(client, ann, "BTC", "d-1")
                assert code == grpc.StatusCode.UNAVAILABLE
                assert status is not None and "asset list is not known yet" in status.message
                code, _ = await rich_status(
                    client.stub.Withdraw(
                        pb.WithdrawRequest(user_id=ann, asset="BTC", amount="1", request_id="w-1"), metadata=ADMIN
                    )
                )
                assert code == grpc.StatusCode.UNAVAILABLE
                assert db_state(users) == before, "nothing was booked and no key recorded"
                assert ADMIN_TOKEN not in status.message and SERVICE_TOKEN not in status.message
        finally:
            await users.stop(0.5)


class OneRpcGateway(gateway_service_pb2_grpc.ExchangeGatewayServicer):
    """Only ListSymbolRules, answering ``symbols`` (base, quote) and recording each call's token."""

    def __init__(self, symbols: list[tuple[str, str]]):
        self.symbols = symbols
        self.tokens: list[str] = []

    async def ListSymbolRules(
        self, request: gateway_service_pb2.ListSymbolRulesRequest, context: grpc.aio.ServicerContext
    ) -> gateway_service_pb2.ListSymbolRulesResponse:
        self.tokens.append(dict(context.invocation_metadata() or ()).get("authorization", ""))
        return gateway_service_pb2.ListSymbolRulesResponse(
            rules=[
                gateway_pb2.SymbolRules(symbol=base + quote, status="TRADING", base_asset=base, quote_asset=quote)
                for base, quote in self.symbols
            ]
        )


@pytest.fixture
async def one_rpc_gateway() -> AsyncIterator[tuple[OneRpcGateway, grpc.aio.Server, str]]:
    servicer = OneRpcGateway([("BTC", "USDT")])
    server = grpc.aio.server()
    gateway_service_pb2_grpc.add_ExchangeGatewayServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, server, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


async def wait_for(condition: Any, what: str) -> None:
    for _ in range(200):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_the_list_is_refreshed_and_a_failed_refresh_keeps_the_last_one(
    tmp_path: Path,
    one_rpc_gateway: tuple[OneRpcGateway, grpc.aio.Server, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    servicer, server, addr = one_rpc_gateway
    config = replace(
        make_config(tmp_path / "users.db"), assets=(), exchange_gateway_addr=addr, assets_refresh_seconds=0
    )
    users: RunningService = await start(config)
    try:
        async with grpc.aio.insecure_channel(users.addr) as channel:
            client = Client(channel, users)
            ann = await client.new_user("ann")
            assert servicer.tokens == [], "nothing asked at start"
            assert (await deposit_status(client, ann, "BTC", "d-1"))[0] == grpc.StatusCode.OK
            assert servicer.tokens == [f"Bearer {SERVICE_TOKEN}"], "asked once, with the service token"

            servicer.symbols = [("ETH", "USDT")]
            assert (await deposit_status(client, ann, "BTC", "d-2"))[0] == grpc.StatusCode.OK, "the last list"
            await wait_for(lambda: len(servicer.tokens) == 2, "a background refresh")
            for attempt in range(100):
                code, status = await deposit_status(client, ann, "BTC", f"d-3-{attempt}")
                if code != grpc.StatusCode.OK:
                    break
                await asyncio.sleep(0.05)
            assert (code, bad_field(status)) == (grpc.StatusCode.INVALID_ARGUMENT, "asset"), "the new list applies"

            await server.stop(None)
            assert (await deposit_status(client, ann, "ETH", "d-4"))[0] == grpc.StatusCode.OK
            await wait_for(lambda: "could not load the exchange's asset list" in caplog.text, "a failed refresh")
            assert (await deposit_status(client, ann, "ETH", "d-5"))[0] == grpc.StatusCode.OK, "the last list kept"
            assert (await client.balances(ann))["ETH"][0] == "2.00000000"
    finally:
        await users.stop(0.5)
