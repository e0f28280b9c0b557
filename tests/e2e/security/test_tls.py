"""TLS on every gRPC port and mutual TLS between the services, on the real processes.

The stack runs with ``TRADING_TLS_DIR`` set to a development set made by ``launcher.certs``. Users' clients
(grpcurl, the tests' channels) trust the CA and present no certificate; the services call each other on the
internal ports with their own certificate. Every refusal below is checked on the code the caller gets.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.certs import new_ca
from tests.support import grpcurl
from trading.gateway.v1 import gateway_pb2, gateway_service_pb2, gateway_service_pb2_grpc
from trading.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from trading.user.v1 import user_service_pb2, user_service_pb2_grpc

from .conftest import SERVICES, TlsStack

pytestmark = pytest.mark.e2e

Metadata = tuple[tuple[str, str], ...]
FINAL = {
    order_pb2.ORDER_STATUS_FILLED,
    order_pb2.ORDER_STATUS_CANCELLED,
    order_pb2.ORDER_STATUS_REJECTED,
    order_pb2.ORDER_STATUS_EXPIRED,
}


def bearer(token: str) -> Metadata:
    return (("authorization", f"Bearer {token}"),)


async def code_of(call: Any) -> grpc.StatusCode:
    """The status code a unary call or the first read of a stream ends with (OK if it succeeds)."""
    try:
        if hasattr(call, "read"):
            await call.read()
        else:
            await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


class Clients:
    """Channels to the stack's ports with a chosen credential, closed together."""

    def __init__(self, stack: TlsStack):
        self.stack = stack
        self.channels: list[grpc.aio.Channel] = []

    def channel(self, target: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        channel = (
            grpc.aio.insecure_channel(target) if credentials is None else grpc.aio.secure_channel(target, credentials)
        )
        self.channels.append(channel)
        return channel

    def users(self, credentials: grpc.ChannelCredentials | None = None, *, internal: bool = False) -> Any:
        """A UserService stub on users' port (default: a user's TLS credentials) or the internal port."""
        target = self.stack.internal_addr("user_service") if internal else self.stack.addr("user_service")
        creds = self.stack.certs.user_credentials() if credentials is None else credentials
        return user_service_pb2_grpc.UserServiceStub(self.channel(target, creds))

    def gateway(self, credentials: grpc.ChannelCredentials | None = None, *, internal: bool = False) -> Any:
        """An ExchangeGateway stub on users' port (default: a user's TLS credentials) or the internal port."""
        target = self.stack.internal_addr("exchange_gateway") if internal else self.stack.addr("exchange_gateway")
        creds = self.stack.certs.user_credentials() if credentials is None else credentials
        return gateway_service_pb2_grpc.ExchangeGatewayStub(self.channel(target, creds))

    def orders(self) -> Any:
        channel = self.channel(self.stack.addr("order_service"), self.stack.certs.user_credentials())
        return order_service_pb2_grpc.OrderServiceStub(channel)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()


@pytest.fixture
async def clients(tls_stack: TlsStack) -> AsyncIterator[Clients]:
    c = Clients(tls_stack)
    try:
        yield c
    finally:
        await c.close()


async def new_trader(clients: Clients, deposit: str = "1000") -> tuple[str, Metadata]:
    """A user with ``deposit`` USDT and an API key, made by the admin over TLS."""
    admin = bearer(clients.stack.admin_token)
    users = clients.users()
    name = f"tls{time.monotonic_ns()}"
    user = (
        await users.CreateUser(
            user_service_pb2.CreateUserRequest(username=name, email=f"{name}@example.com"), metadata=admin, timeout=10
        )
    ).user
    # A deposit makes the user service ask the gateway which assets it lists (mutual TLS, user_service's cert).
    await users.Deposit(
        user_service_pb2.DepositRequest(user_id=user.user_id, asset="USDT", amount=deposit, request_id=f"d-{name}"),
        metadata=admin,
        timeout=10,
    )
    key = await users.CreateApiKey(
        user_service_pb2.CreateApiKeyRequest(user_id=user.user_id, label="tls"), metadata=admin, timeout=10
    )
    return user.user_id, bearer(key.api_key)


def http(url: str, body: bytes | None = None) -> str:
    """GET (or POST ``body`` as JSON to) the simulator on loopback; the answer's text."""
    request = urllib.request.Request(url, data=body, headers={"content-type": "application/json"})  # noqa: S310
    with urllib.request.urlopen(request, timeout=5) as answer:  # noqa: S310
        assert answer.status == 200
        return str(answer.read().decode())


def reserve_request() -> Any:
    return user_service_pb2.ReserveFundsRequest(order_id="tls-probe", user_id="nobody", asset="USDT", amount="1")


# --- users' ports: TLS only, the CA is all a client needs ---------------------------------------


@pytest.mark.parametrize("name", list(SERVICES))
def test_grpcurl_with_the_ca_lists_and_describes_each_service(tls_stack: TlsStack, name: str):
    addr, service = tls_stack.addr(name), SERVICES[name][1]
    listed = grpcurl("-cacert", str(tls_stack.certs.ca_path), addr, "list")
    assert listed.returncode == 0, listed.stderr
    assert service in listed.stdout.split()
    described = grpcurl("-cacert", str(tls_stack.certs.ca_path), addr, "describe", service)
    assert described.returncode == 0, described.stderr
    assert f"service {service.rsplit('.', 1)[1]} {{" in described.stdout and "rpc " in described.stdout


def test_grpcurl_with_the_ca_and_the_admin_token_creates_a_user(tls_stack: TlsStack):
    created = grpcurl(
        "-cacert",
        str(tls_stack.certs.ca_path),
        "-H",
        f"authorization: Bearer {tls_stack.admin_token}",
        "-d",
        '{"username": "grpcurltls", "email": "grpcurltls@example.com"}',
        tls_stack.addr("user_service"),
        "trading.user.v1.UserService/CreateUser",
    )
    assert created.returncode == 0, created.stderr
    assert '"username": "grpcurltls"' in created.stdout


@pytest.mark.parametrize("name", list(SERVICES))
def test_a_plaintext_client_fails_on_every_port(tls_stack: TlsStack, name: str):
    targets = [tls_stack.addr(name)]
    if name != "order_service":
        targets.append(tls_stack.internal_addr(name))
    for target in targets:
        plain = grpcurl("-plaintext", "-max-time", "5", target, "list")
        assert plain.returncode != 0, plain.stdout
        with grpc.insecure_channel(target) as channel:
            with pytest.raises(grpc.RpcError) as caught:
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_ca_fails(tls_stack: TlsStack, tmp_path):
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(new_ca("not ours").cert_pem())
    refused = grpcurl("-cacert", str(other_ca), "-max-time", "5", tls_stack.addr("order_service"), "list")
    assert refused.returncode != 0
    assert "certificate" in refused.stderr.lower()


# --- the internal ports: mutual TLS with a certificate of the CA --------------------------------


@pytest.mark.parametrize("name", ["user_service", "exchange_gateway"])
async def test_an_internal_port_refuses_a_client_without_a_certificate(tls_stack: TlsStack, name: str):
    async with grpc.aio.secure_channel(tls_stack.internal_addr(name), tls_stack.certs.user_credentials()) as channel:
        code = await code_of(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5))
    assert code == grpc.StatusCode.UNAVAILABLE


async def test_a_certificate_from_another_ca_is_refused_on_internal_rpcs(tls_stack: TlsStack, clients: Clients):
    service = bearer(tls_stack.service_token)
    foreign = tls_stack.certs.foreign_credentials()
    # On the internal ports the handshake itself fails: the certificate is not the CA's.
    users = clients.users(foreign, internal=True)
    assert await code_of(users.ReserveFunds(reserve_request(), metadata=service, timeout=5)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    gateway = clients.gateway(foreign, internal=True)
    assert await code_of(
        gateway.GetOrder(gateway_service_pb2.GetOrderRequest(client_order_id="x"), metadata=service, timeout=5)
    ) == (grpc.StatusCode.UNAVAILABLE)
    # Users' ports never ask for a certificate, so the service token there has no service behind it.
    users_port = clients.users(foreign)
    assert await code_of(users_port.ReserveFunds(reserve_request(), metadata=service, timeout=5)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )


async def test_the_service_token_without_a_service_certificate_is_refused(tls_stack: TlsStack, clients: Clients):
    service = bearer(tls_stack.service_token)
    users, gateway = clients.users(), clients.gateway()
    assert await code_of(users.ReserveFunds(reserve_request(), metadata=service, timeout=5)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert await code_of(users.GetLedgerTotals(user_service_pb2.GetLedgerTotalsRequest(), metadata=service)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    submit = gateway_service_pb2.SubmitOrderRequest(
        client_order_id="tls-no-cert",
        symbol="BTCUSDT",
        side=gateway_pb2.SIDE_BUY,
        type=gateway_pb2.ORDER_TYPE_LIMIT,
        time_in_force=gateway_pb2.TIME_IN_FORCE_GTC,
        quantity="0.001",
        price="10000.00",
    )
    assert await code_of(gateway.SubmitOrder(submit, metadata=service, timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    stream = gateway.StreamExecutions(gateway_service_pb2.StreamExecutionsRequest(after_sequence=0), metadata=service)
    assert await code_of(stream) == grpc.StatusCode.UNAUTHENTICATED
    assert "tls-no-cert" not in await asyncio.to_thread(http, f"{tls_stack.sim_url}/sim/v1/orders")


async def test_the_service_token_from_the_wrong_services_certificate_is_refused(tls_stack: TlsStack, clients: Clients):
    certs, service = tls_stack.certs, bearer(tls_stack.service_token)
    # The user service is called by the order service only.
    for caller in ("exchange_gateway", "user_service"):
        users = clients.users(certs.service_credentials(caller), internal=True)
        assert await code_of(users.ReserveFunds(reserve_request(), metadata=service, timeout=5)) == (
            grpc.StatusCode.PERMISSION_DENIED
        ), caller
        assert await code_of(
            users.AuthenticateApiKey(user_service_pb2.AuthenticateApiKeyRequest(api_key="tk_x"), metadata=service)
        ) == (grpc.StatusCode.PERMISSION_DENIED), caller
    # The user service may read the gateway's symbol rules, and nothing else there.
    as_user_service = clients.gateway(certs.service_credentials("user_service"), internal=True)
    rules = await as_user_service.ListSymbolRules(
        gateway_service_pb2.ListSymbolRulesRequest(), metadata=service, timeout=10
    )
    assert any(r.symbol == "BTCUSDT" for r in rules.rules)
    assert await code_of(
        as_user_service.GetOrder(gateway_service_pb2.GetOrderRequest(client_order_id="x"), metadata=service)
    ) == (grpc.StatusCode.PERMISSION_DENIED)
    stream = as_user_service.StreamExecutions(
        gateway_service_pb2.StreamExecutionsRequest(after_sequence=0), metadata=service
    )
    assert await code_of(stream) == grpc.StatusCode.PERMISSION_DENIED
    # The gateway calls no one: its own certificate opens nothing with the service token.
    as_gateway = clients.gateway(certs.service_credentials("exchange_gateway"), internal=True)
    assert await code_of(
        as_gateway.ListSymbolRules(gateway_service_pb2.ListSymbolRulesRequest(), metadata=service)
    ) == (grpc.StatusCode.PERMISSION_DENIED)


async def test_the_order_services_certificate_with_the_service_token_is_accepted(tls_stack: TlsStack, clients: Clients):
    certs, service = tls_stack.certs, bearer(tls_stack.service_token)
    users = clients.users(certs.service_credentials("order_service"), internal=True)
    totals = await users.GetLedgerTotals(user_service_pb2.GetLedgerTotalsRequest(), metadata=service, timeout=5)
    assert totals is not None
    gateway = clients.gateway(certs.service_credentials("order_service"), internal=True)
    status = await gateway.GetRateLimitStatus(gateway_service_pb2.GetRateLimitStatusRequest(), metadata=service)
    assert status is not None


async def test_a_user_key_or_the_admin_token_never_opens_an_internal_rpc(tls_stack: TlsStack, clients: Clients):
    _, key = await new_trader(clients, deposit="10")
    admin = bearer(tls_stack.admin_token)
    order_cert = tls_stack.certs.service_credentials("order_service")
    for users in (clients.users(), clients.users(order_cert, internal=True)):
        for credential in (admin, key):
            assert await code_of(users.ReserveFunds(reserve_request(), metadata=credential, timeout=5)) == (
                grpc.StatusCode.PERMISSION_DENIED
            )
            assert await code_of(
                users.SettleTrade(user_service_pb2.SettleTradeRequest(trade_id="t"), metadata=credential)
            ) == (grpc.StatusCode.PERMISSION_DENIED)
    for gateway in (clients.gateway(), clients.gateway(order_cert, internal=True)):
        get = gateway.GetOrder(gateway_service_pb2.GetOrderRequest(client_order_id="x"), metadata=admin, timeout=5)
        assert await code_of(get) == grpc.StatusCode.PERMISSION_DENIED
        stream = gateway.StreamExecutions(gateway_service_pb2.StreamExecutionsRequest(), metadata=admin)
        assert await code_of(stream) == grpc.StatusCode.PERMISSION_DENIED
        cancel = gateway.CancelOrder(gateway_service_pb2.CancelOrderRequest(client_order_id="x"), metadata=key)
        assert await code_of(cancel) == grpc.StatusCode.UNAUTHENTICATED


# --- the whole flow over TLS --------------------------------------------------------------------


async def wait_final(orders: Any, key: Metadata, order_id: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        order = (await orders.GetOrder(order_service_pb2.GetOrderRequest(order_id=order_id), metadata=key)).order
        if order.status in FINAL or time.monotonic() > deadline:
            return order
        await asyncio.sleep(0.1)


async def test_placement_fill_and_cancel_work_over_tls(tls_stack: TlsStack, clients: Clients):
    await asyncio.to_thread(http, f"{tls_stack.sim_url}/sim/v1/price", b'{"symbol": "BTCUSDT", "price": "50000.00"}')
    user_id, key = await new_trader(clients, deposit="1000")
    orders = clients.orders()

    market = await orders.PlaceOrder(
        order_service_pb2.PlaceOrderRequest(
            symbol="BTCUSDT", side=order_pb2.ORDER_SIDE_BUY, type=order_pb2.ORDER_TYPE_MARKET, quantity="0.001"
        ),
        metadata=key,
        timeout=15,
    )
    filled = await wait_final(orders, key, market.order.order_id)
    assert filled.status == order_pb2.ORDER_STATUS_FILLED, tls_stack.logs()
    assert Decimal(filled.filled_quantity) == Decimal("0.001")

    resting = await orders.PlaceOrder(
        order_service_pb2.PlaceOrderRequest(
            symbol="BTCUSDT",
            side=order_pb2.ORDER_SIDE_BUY,
            type=order_pb2.ORDER_TYPE_LIMIT,
            time_in_force=order_pb2.TIME_IN_FORCE_GTC,
            quantity="0.001",
            price="40000.00",
        ),
        metadata=key,
        timeout=15,
    )
    assert resting.order.status not in FINAL
    await orders.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=resting.order.order_id), metadata=key)
    cancelled = await wait_final(orders, key, resting.order.order_id)
    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED

    # The fill is settled and the cancelled order's reservation released, through the internal calls.
    users = clients.users()
    admin = bearer(tls_stack.admin_token)
    deadline = time.monotonic() + 15
    while True:
        balances = await users.GetBalances(user_service_pb2.GetBalancesRequest(user_id=user_id), metadata=admin)
        by_asset = {b.asset: (Decimal(b.available), Decimal(b.locked)) for b in balances.balances}
        btc = by_asset.get("BTC", (Decimal(0), Decimal(0)))
        usdt = by_asset["USDT"]
        if (btc[0] > 0 and usdt[1] == 0) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert btc[0] > 0 and usdt[1] == 0, (by_asset, tls_stack.logs())
    assert usdt[0] < Decimal(1000)


def test_refusals_are_security_events_and_no_token_appears_in_any_process_output(tls_stack: TlsStack):
    # Runs after the refusals above (tests of a module run in order, on the same stack).
    logs = "\n".join(p.out.text + p.err.text for p in tls_stack.procs.values())
    assert "service_peer_refused" in logs
    assert tls_stack.service_token not in logs
    assert tls_stack.admin_token not in logs
    assert "BEGIN PRIVATE KEY" not in logs
