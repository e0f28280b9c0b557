"""The shared server and channel over TLS on loopback, with the development certificates ``make certs`` writes.

A servicer reports who ``shared.tls.peer_service`` says is calling, so the tests see exactly what the
services' authorization sees: nobody on users' port, the verified certificate's service on the internal port.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import stat
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.certs import COMPOSE_NAMES, SERVICES, issue, make_dev_certs, new_ca
from shared.client import open_channel
from shared.config import ConfigError
from shared.server import Registration, create_server
from shared.tls import ServerSecurity, ServiceIdentity, peer_service
from trading.user.v1 import user_pb2, user_service_pb2, user_service_pb2_grpc


class WhoAmI(user_service_pb2_grpc.UserServiceServicer):
    """GetUser answers with the calling service's name (from the verified certificate) as the username."""

    async def GetUser(self, request, context):
        return user_service_pb2.GetUserResponse(user=user_pb2.User(username=peer_service(context) or "nobody"))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls") / "tls"
    assert make_dev_certs(directory)
    return directory


@pytest.fixture
async def served(certs: Path) -> AsyncIterator[tuple[str, str]]:
    identity = ServiceIdentity.load(certs, "user_service")
    registration = Registration(
        "trading.user.v1.UserService", user_service_pb2_grpc.add_UserServiceServicer_to_server, WhoAmI()
    )
    server, port, _, internal = await create_server(
        "127.0.0.1:0", [registration], security=ServerSecurity(identity, 0, variable="USER_SERVICE_ADDR")
    )
    try:
        yield f"127.0.0.1:{port}", f"127.0.0.1:{internal}"
    finally:
        await server.stop(None)


def ca_only(certs: Path) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=(certs / "ca.crt").read_bytes())


async def who(channel: grpc.aio.Channel) -> str:
    stub = user_service_pb2_grpc.UserServiceStub(channel)
    return (await stub.GetUser(user_service_pb2.GetUserRequest(user_id="x"), timeout=5)).user.username


# --- the development set ------------------------------------------------------------------------


def test_make_certs_writes_a_ca_and_a_pair_per_service_with_owner_only_keys(certs: Path):
    assert stat.S_IMODE(certs.stat().st_mode) == 0o700
    assert sorted(p.name for p in certs.iterdir()) == sorted(
        ["ca.crt", *[f"{s}.{ext}" for s in SERVICES for ext in ("crt", "key")]]
    )
    for service in SERVICES:
        assert stat.S_IMODE((certs / f"{service}.key").stat().st_mode) == 0o600
    # The CA's key is never written: nobody can issue another certificate from this CA.
    assert not any("PRIVATE KEY" in p.read_text() for p in certs.glob("*.crt"))


@pytest.mark.parametrize("service", SERVICES)
def test_each_certificate_is_named_after_its_service_and_verifies_for_every_name_it_is_reached_by(
    certs: Path, service: str
):
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((certs / f"{service}.crt").read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == service
    now = datetime.datetime.now(datetime.UTC)
    store = Store([ca])
    for name in ("localhost", COMPOSE_NAMES[service]):
        verifier = PolicyBuilder().store(store).time(now).build_server_verifier(x509.DNSName(name))
        verifier.verify(cert, [])
    verifier = (
        PolicyBuilder().store(store).time(now).build_server_verifier(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    )
    verifier.verify(cert, [])
    PolicyBuilder().store(store).time(now).build_client_verifier().verify(cert, [])


def test_make_certs_keeps_a_complete_set_and_force_replaces_it(tmp_path: Path):
    directory = tmp_path / "tls"
    assert make_dev_certs(directory)
    first = (directory / "ca.crt").read_bytes()
    assert not make_dev_certs(directory)
    assert (directory / "ca.crt").read_bytes() == first
    assert make_dev_certs(directory, force=True)
    assert (directory / "ca.crt").read_bytes() != first


def test_a_missing_certificate_is_a_configuration_error_naming_the_variable_and_file(tmp_path: Path):
    (tmp_path / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    with pytest.raises(ConfigError) as missing:
        ServiceIdentity.load(tmp_path, "order_service")
    assert "TRADING_TLS_DIR" in str(missing.value) and "order_service.crt" in str(missing.value)
    with pytest.raises(ConfigError, match="not a folder"):
        ServiceIdentity.load(tmp_path / "nowhere", "order_service")


# --- serving --------------------------------------------------------------------------------------


async def test_users_port_serves_tls_to_a_client_with_the_ca_only_and_sees_no_service(
    served: tuple[str, str], certs: Path
):
    public, _ = served
    async with grpc.aio.secure_channel(public, ca_only(certs)) as channel:
        assert await who(channel) == "nobody"
    async with grpc.aio.insecure_channel(public) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await who(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def handshake(addr: str, certs: Path, newest: ssl.TLSVersion) -> str:
    """The TLS version a client offering at most ``newest`` gets, or why the handshake failed."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(certs / "ca.crt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # offering TLS 1.1 is the point here
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = newest
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.set_alpn_protocols(["h2"])
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return str(tls.version())
        except (ssl.SSLError, OSError) as exc:
            return f"failed: {exc}"


async def test_tls_older_than_1_2_is_refused(served: tuple[str, str], certs: Path):
    public, _ = served
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = await asyncio.to_thread(handshake, public, certs, ssl.TLSVersion.TLSv1_1)
    assert old.startswith("failed"), old
    assert await asyncio.to_thread(handshake, public, certs, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"


async def test_the_internal_port_knows_the_calling_service_from_its_certificate(served: tuple[str, str], certs: Path):
    _, internal = served
    channel = open_channel(internal, identity=ServiceIdentity.load(certs, "order_service"))
    try:
        assert await who(channel) == "order_service"
    finally:
        await channel.close()


async def test_the_internal_port_refuses_no_certificate_and_another_cas(served: tuple[str, str], certs: Path):
    _, internal = served
    foreign = issue(new_ca("another CA"), "order_service")
    credentials = [
        ca_only(certs),
        grpc.ssl_channel_credentials(
            (certs / "ca.crt").read_bytes(), private_key=foreign.key_pem(), certificate_chain=foreign.cert_pem()
        ),
    ]
    for creds in credentials:
        async with grpc.aio.secure_channel(internal, creds) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_plaintext_server_on_a_non_loopback_address_refuses_to_start():
    with pytest.raises(ConfigError) as refused:
        await create_server("0.0.0.0:0", [], security=ServerSecurity(variable="ORDER_SERVICE_ADDR"))
    assert "TRADING_TLS_DIR" in str(refused.value) and "TRADING_ALLOW_PLAINTEXT" in str(refused.value)
    assert "ORDER_SERVICE_ADDR" in str(refused.value)
