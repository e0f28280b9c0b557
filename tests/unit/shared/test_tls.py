"""TLS settings, the plaintext guard and the service-certificate check (shared.tls), without sockets."""

from __future__ import annotations

import pytest

from services.exchange_gateway.api.auth import ADMIN, SERVICE, authorize
from services.exchange_gateway.api.auth import SERVICE_PEERS as GATEWAY_PEERS
from services.user_service.api.auth import SERVICE_PEERS as USER_PEERS
from shared.config import ConfigError
from shared.errors import PermissionDenied, Unauthenticated
from shared.tls import PLAINTEXT, ServicePeers, TlsSettings, check_plaintext_bind, is_loopback, peer_service


class FakeContext:
    """What a servicer context tells about the connection: its auth context and peer."""

    def __init__(self, auth: dict[str, list[bytes]]):
        self.auth = auth

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth

    def peer(self) -> str:
        return "ipv4:127.0.0.1:40000"


def verified(common_name: str) -> FakeContext:
    """A connection whose client certificate the CA verified, named ``common_name``."""
    return FakeContext(
        {
            "transport_security_type": [b"ssl"],
            "x509_common_name": [common_name.encode()],
            "x509_subject_alternative_name": [b"localhost", b"127.0.0.1"],
        }
    )


USERS_PORT = FakeContext({"transport_security_type": [b"ssl"], "security_level": [b"TSI_PRIVACY_AND_INTEGRITY"]})
PLAINTEXT_CONNECTION = FakeContext({})


@pytest.mark.parametrize("addr", ["127.0.0.1:50051", "127.9.9.9:1", "[::1]:50051", "localhost:50051"])
def test_loopback_addresses_are_loopback(addr: str):
    assert is_loopback(addr)


@pytest.mark.parametrize("addr", ["0.0.0.0:50051", "[::]:50051", ":50051", "10.1.2.3:50051", "user-service:50052"])
def test_wildcard_private_and_named_addresses_are_not_loopback(addr: str):
    assert not is_loopback(addr)


def test_plaintext_on_a_non_loopback_address_is_refused_naming_both_variables():
    with pytest.raises(ConfigError) as refused:
        check_plaintext_bind("0.0.0.0:50051", "ORDER_SERVICE_ADDR", allow_plaintext=False)
    message = str(refused.value)
    assert "0.0.0.0:50051" in message and "ORDER_SERVICE_ADDR" in message
    assert "TRADING_TLS_DIR" in message and "TRADING_ALLOW_PLAINTEXT=1" in message


def test_plaintext_is_fine_on_loopback_and_where_explicitly_allowed():
    check_plaintext_bind("127.0.0.1:0", "USER_SERVICE_ADDR", allow_plaintext=False)
    check_plaintext_bind("0.0.0.0:0", "USER_SERVICE_ADDR", allow_plaintext=True)


def test_settings_default_to_plaintext_and_the_documented_internal_ports():
    settings = TlsSettings.from_env({})
    assert settings == PLAINTEXT and not settings.enabled
    assert (settings.internal_port("user_service"), settings.internal_port("exchange_gateway")) == (50062, 50063)
    assert settings.internal_port("order_service") is None


def test_with_tls_services_are_called_on_their_internal_port_on_the_same_host():
    settings = TlsSettings.from_env(
        {"TRADING_TLS_DIR": "/certs", "USER_SERVICE_INTERNAL_PORT": "6001", "TRADING_ALLOW_PLAINTEXT": "true"}
    )
    assert settings.enabled and settings.allow_plaintext
    assert settings.target("user_service", "user-service:50052") == "user-service:6001"
    assert settings.target("exchange_gateway", "127.0.0.1:50053") == "127.0.0.1:50063"
    assert PLAINTEXT.target("user_service", "user-service:50052") == "user-service:50052"


@pytest.mark.parametrize("value", ["-1", "70000", "port"])
def test_a_bad_internal_port_is_a_configuration_error_naming_it(value: str):
    with pytest.raises(ConfigError, match="EXCHANGE_GATEWAY_INTERNAL_PORT"):
        TlsSettings.from_env({"EXCHANGE_GATEWAY_INTERNAL_PORT": value})


def test_internal_port_0_picks_a_free_port_as_a_listen_address_on_port_0_does():
    assert TlsSettings.from_env({"EXCHANGE_GATEWAY_INTERNAL_PORT": "0"}).exchange_gateway_internal_port == 0


def test_a_plaintext_server_security_is_checked_when_it_is_built():
    with pytest.raises(ConfigError, match="TRADING_ALLOW_PLAINTEXT"):
        PLAINTEXT.server_security("order_service", "0.0.0.0:50051", "ORDER_SERVICE_ADDR")
    security = PLAINTEXT.server_security("order_service", "127.0.0.1:0", "ORDER_SERVICE_ADDR")
    assert security.identity is None and security.internal_bind("127.0.0.1:0") is None


def test_the_peer_is_the_verified_certificates_common_name_and_nothing_else():
    assert peer_service(verified("order_service")) == "order_service"
    assert peer_service(USERS_PORT) is None
    assert peer_service(PLAINTEXT_CONNECTION) is None
    # Names without a TLS transport are not an identity.
    assert peer_service(FakeContext({"x509_common_name": [b"order_service"]})) is None


def test_the_service_token_without_a_service_certificate_is_unauthenticated():
    for context in (USERS_PORT, PLAINTEXT_CONNECTION):
        with pytest.raises(Unauthenticated) as refused:
            USER_PEERS.check(context, "ReserveFunds")  # type: ignore[arg-type]
        assert refused.value.reason == "SERVICE_CERTIFICATE_REQUIRED"


@pytest.mark.parametrize("caller", ["user_service", "exchange_gateway", "someone_else"])
def test_only_the_order_service_certificate_may_use_the_service_token_on_the_user_service(caller: str):
    for rpc in ("ReserveFunds", "ReleaseFunds", "SettleTrade", "AuthenticateApiKey", "GetLedgerTotals", "GetUser"):
        with pytest.raises(PermissionDenied):
            USER_PEERS.check(verified(caller), rpc)  # type: ignore[arg-type]
        USER_PEERS.check(verified("order_service"), rpc)  # type: ignore[arg-type]


def test_the_user_service_certificate_opens_only_list_symbol_rules_on_the_gateway():
    GATEWAY_PEERS.check(verified("user_service"), "ListSymbolRules")  # type: ignore[arg-type]
    for rpc in ("SubmitOrder", "CancelOrder", "GetOrder", "StreamExecutions", "GetSymbolRules"):
        with pytest.raises(PermissionDenied):
            GATEWAY_PEERS.check(verified("user_service"), rpc)  # type: ignore[arg-type]
        GATEWAY_PEERS.check(verified("order_service"), rpc)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        GATEWAY_PEERS.check(verified("exchange_gateway"), "ListSymbolRules")  # type: ignore[arg-type]


def test_an_rpc_with_its_own_callers_overrides_the_default():
    peers = ServicePeers(callers={"A": frozenset({"x"})}, default=frozenset({"y"}))
    assert peers.allowed("A") == {"x"} and peers.allowed("B") == {"y"}


GATEWAY = "/trading.gateway.v1.ExchangeGateway/"


def token(value: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {value}"),)


@pytest.mark.parametrize("rpc", ["SubmitOrder", "CancelOrder", "GetOrder", "StreamExecutions"])
def test_the_admin_token_never_opens_an_internal_gateway_rpc(rpc: str):
    with pytest.raises(PermissionDenied):
        authorize(GATEWAY + rpc, token("adm"), service_token="svc", admin_token="adm")
    assert authorize(GATEWAY + rpc, token("svc"), service_token="svc", admin_token="adm") == SERVICE


def test_the_admin_token_still_reads_the_account_and_the_rate_limits():
    for rpc in ("GetRateLimitStatus", "GetAccountBalances", "ListForeignOrders", "ListAnomalies"):
        assert authorize(GATEWAY + rpc, token("adm"), service_token="svc", admin_token="adm") == ADMIN


def test_a_user_key_opens_nothing_on_the_gateway():
    with pytest.raises(Unauthenticated):
        authorize(GATEWAY + "GetRateLimitStatus", token("tk_someone"), service_token="svc", admin_token="adm")
