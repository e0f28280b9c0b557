"""API key scopes, expiry, throttled guessing and the audit trail over the whole in-process stack.

The stack here starts the user service first (with a fixed asset list and low throttle limits: slower
answers after 2 failures, refused after 4) so that the gateway can send its security events to it.
A client "elsewhere" is a TCP relay whose connections to the order service leave from 127.0.0.2: the
order service passes that address on (``client_peer``), and the user service throttles it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.exchange_gateway.bootstrap import start as start_gateway
from services.exchange_simulator.app import SimConfig, start_simulator
from services.user_service.bootstrap import start as start_users
from services.user_service.domain import api_keys
from services.user_service.domain.api_keys import Grant
from services.user_service.domain.model import TRADE_SCOPES
from services.user_service.service import accounts
from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
from tests.support import assert_no_secret
from trading.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from trading.user.v1 import user_pb2, user_service_pb2

from .conftest import (
    ADMIN,
    ADMIN_TOKEN,
    SERVICE_TOKEN,
    Stack,
    Trader,
    gateway_service_config,
    order_service_config,
    order_service_on,
    user_service_config,
)
from .test_bnb_commissions import exchange_balances
from .test_foreign_orders_report import place_directly

pb = order_pb2
K = user_pb2.AuditEventKind
BAN_AFTER = 4
ELSEWHERE = "127.0.0.2"


class Relay:
    """A TCP relay on 127.0.0.1 whose connections reach ``target`` from another loopback address."""

    def __init__(self, target: str, source_ip: str):
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.source_ip = source_ip
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port, local_addr=(self.source_ip, 0))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    sim = await start_simulator(SimConfig(port=0, log_level="WARNING"))
    users = await start_users(
        user_service_config(
            tmp_path,
            assets=("BTC", "USDT", "ETH", "BNB"),
            auth_slow_after=2,
            auth_ban_after=BAN_AFTER,
            auth_ban_seconds=120,
        )
    )
    # its security events go to the audit trail
    gateway = await start_gateway(gateway_service_config(tmp_path, sim, user_service_addr=users.addr))
    async with order_service_on(
        tmp_path, sim, users, gateway, order_service_config(tmp_path, users.addr, gateway.addr)
    ) as s:
        yield s


@pytest.fixture
async def elsewhere(stack: Stack) -> AsyncIterator[order_service_pb2_grpc.OrderServiceStub]:
    """A client of the order service connecting from 127.0.0.2."""
    relay = Relay(stack.orders_running.addr, ELSEWHERE)
    channel = grpc.aio.insecure_channel(await relay.start())
    try:
        yield order_service_pb2_grpc.OrderServiceStub(channel)
    finally:
        await channel.close()
        await relay.stop()


def auth(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def wrong_key(i: int) -> str:
    return f"tk_01J9Z3ABCDEFGHJKMNPQRS{i:04d}_" + "w" * 43


async def status_of(call: Any) -> tuple[grpc.StatusCode, Any]:
    """Await a call; its code and google.rpc.Status (OK and None on success)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), await rpc_status.aio.from_call(call)
    return grpc.StatusCode.OK, None


def detail(status: Any, kind: Any) -> Any:
    for any_detail in status.details if status else ():
        if any_detail.Is(kind.DESCRIPTOR):
            message = kind()
            any_detail.Unpack(message)
            return message
    return None


async def read_key(stack: Stack, trader: Trader) -> str:
    """A read-only key the trader makes with its own trade key."""
    created = await stack.users.CreateApiKey(
        user_service_pb2.CreateApiKeyRequest(label="dashboard", scopes=[user_pb2.SCOPE_READ]), metadata=trader.auth
    )
    assert list(created.key.scopes) == [user_pb2.SCOPE_READ] and created.key.user_id == trader.user_id
    return created.api_key


def expired_key(stack: Stack, user_id: str) -> str:
    """A trade key of ``user_id`` that expired a second ago, stored directly."""
    issued = api_keys.issue()
    now = int(time.time() * 1000)
    grant = Grant(TRADE_SCOPES, now - 1000)
    stack.users_running.transactions.write_sync(
        lambda repo: accounts.create_api_key(repo, user_id, "old", issued, now - 60_000, grant=grant)
    )
    return issued.api_key


async def audit_events(stack: Stack, **filters: Any) -> list[user_pb2.AuditEvent]:
    """The audit trail (admin), with the user service's open windows written first."""
    await stack.users_running.audit.flush()
    response = await stack.users.ListAuditEvents(
        user_service_pb2.ListAuditEventsRequest(page_size=1000, **filters), metadata=ADMIN
    )
    return list(response.events)


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.1)


def limit_buy(**fields: Any) -> dict[str, Any]:
    return {"side": pb.ORDER_SIDE_BUY, "type": pb.ORDER_TYPE_LIMIT, "quantity": "0.01", "price": "40000.00", **fields}


async def test_a_read_only_key_lists_and_watches_but_may_not_place_or_cancel(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    order = await trader.place(**limit_buy())
    reader = Trader(trader.user_id, await read_key(stack, trader), "", stack.order_stub)
    before = await stack.balances(trader.user_id)

    assert (await reader.get(order.order_id)).order_id == order.order_id
    assert [o.order_id for o in (await reader.orders()).orders] == [order.order_id]
    await stack.order_stub.ListTrades(order_service_pb2.ListTradesRequest(), metadata=reader.auth)
    watch = stack.order_stub.WatchOrders(order_service_pb2.WatchOrdersRequest(after_sequence=0), metadata=reader.auth)
    first = await asyncio.wait_for(watch.read(), timeout=10)
    assert first.order.order_id == order.order_id
    watch.cancel()

    calls = {
        "PlaceOrder": stack.order_stub.PlaceOrder(
            order_service_pb2.PlaceOrderRequest(symbol="BTCUSDT", **limit_buy()), metadata=reader.auth
        ),
        "CancelOrder": stack.order_stub.CancelOrder(
            order_service_pb2.CancelOrderRequest(order_id=order.order_id), metadata=reader.auth
        ),
        "CancelAllOrders": stack.order_stub.CancelAllOrders(
            order_service_pb2.CancelAllOrdersRequest(), metadata=reader.auth
        ),
    }
    for rpc, call in calls.items():
        code, status = await status_of(call)
        assert code == grpc.StatusCode.PERMISSION_DENIED, rpc
        assert detail(status, error_details_pb2.ErrorInfo).reason == "SCOPE_MISSING", rpc
    assert await stack.balances(trader.user_id) == before  # nothing reserved, nothing released
    assert (await trader.get(order.order_id)).status == pb.ORDER_STATUS_PENDING
    assert (await trader.cancel(order.order_id)).status == pb.ORDER_STATUS_CANCELLED  # the trade key may

    denied = await until(
        lambda: audit_events(stack, kind=K.Value("AUDIT_EVENT_KIND_PERMISSION_DENIED")),
        "the order service's denials in the audit trail",
    )
    assert {(e.source, e.rpc, e.user_id, e.details["reasons"]) for e in denied} <= {
        ("order_service", rpc, trader.user_id, "SCOPE_MISSING") for rpc in calls
    }


async def test_an_expired_key_is_unauthenticated_with_a_message_that_says_so(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "1000"})
    expired = Trader(trader.user_id, expired_key(stack, trader.user_id), "", stack.order_stub)
    for call in (
        stack.order_stub.ListOrders(order_service_pb2.ListOrdersRequest(), metadata=expired.auth),
        stack.order_stub.PlaceOrder(
            order_service_pb2.PlaceOrderRequest(symbol="BTCUSDT", **limit_buy()), metadata=expired.auth
        ),
    ):
        code, status = await status_of(call)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in status.message
    assert (await trader.orders()).orders == []  # nothing was placed


async def test_a_burst_of_wrong_keys_from_one_client_is_throttled_and_recorded_once_while_another_trades(
    stack: Stack, elsewhere: order_service_pb2_grpc.OrderServiceStub
) -> None:
    trader = await stack.trader({"USDT": "10000"})
    codes = []
    for i in range(10):
        code, status = await status_of(
            elsewhere.ListOrders(order_service_pb2.ListOrdersRequest(), metadata=auth(wrong_key(i)))
        )
        codes.append(code)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert detail(status, error_details_pb2.RetryInfo).retry_delay.seconds > 0
        # Meanwhile a user connecting from elsewhere trades as usual.
        placed = await trader.place(**limit_buy(client_order_id=f"meanwhile-{i}"))
        assert placed.status == pb.ORDER_STATUS_PENDING
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * BAN_AFTER + [grpc.StatusCode.RESOURCE_EXHAUSTED] * (
        10 - BAN_AFTER
    )
    assert len((await trader.orders()).orders) == 10
    # The refused address is refused whatever it presents, a good key included, whenever the order service
    # asks the user service: here a key it has not resolved yet (it keeps one it resolved for
    # ORDER_AUTH_CACHE_SECONDS).
    fresh = await stack.trader({"USDT": "100"}, name="fresh")
    code, _ = await status_of(elsewhere.ListOrders(order_service_pb2.ListOrdersRequest(), metadata=fresh.auth))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED

    failed = await audit_events(stack, kind=K.Value("AUDIT_EVENT_KIND_AUTHENTICATION_FAILED"))
    (event,) = failed  # once for the window, counting every failure; none for 127.0.0.1
    assert (event.peer, event.count, event.details["rpcs"]) == (ELSEWHERE, BAN_AFTER, "AuthenticateApiKey")
    (throttled,) = await audit_events(stack, kind=K.Value("AUDIT_EVENT_KIND_AUTHENTICATION_THROTTLED"))
    assert throttled.peer == ELSEWHERE


async def test_every_kind_of_security_event_is_in_the_audit_trail_and_no_secret_anywhere(
    stack: Stack, elsewhere: order_service_pb2_grpc.OrderServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    trader = await stack.trader({"USDT": "10000", "BTC": "1"})  # USER_CREATED, DEPOSIT, API_KEY_CREATED
    other = await stack.trader({"USDT": "100"}, name="other")
    await stack.set_status(other.user_id, user_pb2.USER_STATUS_SUSPENDED)  # USER_STATUS_CHANGED
    await stack.users.Withdraw(  # WITHDRAWAL
        user_service_pb2.WithdrawRequest(user_id=trader.user_id, asset="USDT", amount="10", request_id="wd-audit"),
        metadata=ADMIN,
    )
    reader_key = await read_key(stack, trader)
    await status_of(  # PERMISSION_DENIED (order service)
        stack.order_stub.PlaceOrder(
            order_service_pb2.PlaceOrderRequest(symbol="BTCUSDT", **limit_buy()), metadata=auth(reader_key)
        )
    )
    await stack.users.RevokeApiKey(  # API_KEY_REVOKED
        user_service_pb2.RevokeApiKeyRequest(key_id=other.key_id), metadata=ADMIN
    )
    expired = expired_key(stack, trader.user_id)
    await status_of(  # EXPIRED_API_KEY_USED
        stack.order_stub.ListOrders(order_service_pb2.ListOrdersRequest(), metadata=auth(expired))
    )
    for i in range(BAN_AFTER + 1):  # AUTHENTICATION_FAILED, AUTHENTICATION_THROTTLED
        await status_of(elsewhere.ListOrders(order_service_pb2.ListOrdersRequest(), metadata=auth(wrong_key(i))))
    await stack.order_stub.SetUserLimits(  # ADMIN_ACTION (order service)
        order_service_pb2.SetUserLimitsRequest(user_id=trader.user_id, orders_per_second="5", max_open_orders=50),
        metadata=ADMIN,
    )
    await place_directly(  # FOREIGN_ORDER (gateway)
        stack, symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.02", price="41000.00",
        newClientOrderId="web_person_audit",
    )  # fmt: skip
    await stack.gateway_running.internals.orders.reconcile("test")
    too_much = (await exchange_balances(stack))["USDT"] + Decimal(1000)
    await stack.trader({"USDT": str(too_much)}, name="short")
    await stack.order_stub.GetReconciliationReport(  # RECONCILIATION_SHORTFALL (order service)
        order_service_pb2.GetReconciliationReportRequest(), metadata=ADMIN
    )
    await stack.sim_post("limits", {"orders_per_10s": 1})  # EXCHANGE_RATE_LIMITED (gateway): a 429
    burst = [asyncio.wait_for(trader.place(**limit_buy(client_order_id=f"burst-{i}")), timeout=3) for i in range(3)]
    await asyncio.gather(*burst, return_exceptions=True)

    every_kind = {K.Name(k) for k in K.values() if k != K.Value("AUDIT_EVENT_KIND_UNSPECIFIED")}

    async def complete() -> list[user_pb2.AuditEvent] | None:
        events = await audit_events(stack)
        return events if {K.Name(e.kind) for e in events} >= every_kind else None

    events = await until(complete, "every kind of event in the audit trail", timeout=30)
    source = {K.Name(e.kind).removeprefix("AUDIT_EVENT_KIND_"): e.source for e in events}
    assert source["FOREIGN_ORDER"] == source["EXCHANGE_RATE_LIMITED"] == "exchange_gateway"
    assert source["RECONCILIATION_SHORTFALL"] == source["ADMIN_ACTION"] == "order_service"
    (foreign,) = [e for e in events if e.kind == K.Value("AUDIT_EVENT_KIND_FOREIGN_ORDER")]
    assert foreign.details["client_order_id"] == "web_person_audit"
    limited = [e for e in events if e.kind == K.Value("AUDIT_EVENT_KIND_EXCHANGE_RATE_LIMITED")]
    first_limit = limited[-1]  # a 418 ban may follow it
    assert (first_limit.details["http_status"], first_limit.details["path"]) == ("429", "/api/v3/order")

    keys = [trader.api_key, other.api_key, reader_key, expired, *map(wrong_key, range(BAN_AFTER + 1))]
    secrets = [ADMIN_TOKEN, SERVICE_TOKEN, SIM_DEV_API_SECRET, SIM_DEV_API_KEY] + keys + [k[-43:] for k in keys]
    assert_no_secret(secrets, events, caplog.records)
