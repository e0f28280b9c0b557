"""The four real processes over TLS: ``TRADING_TLS_DIR`` set to a fresh development set (``launcher.certs``).

``TlsStack`` starts the simulator, the gateway, the user service and the order service with
``python -m services.<name>`` on loopback port 0 (users' ports and the two internal mutual TLS ports), reads
the ports each bound from its ready file and gives them to the ones started after it, waits until each
answers gRPC health over TLS (verified with the CA only, as a user's client does), and kills
everything in teardown. ``Certs`` also holds certificates that no service uses: one from another CA.
"""

from __future__ import annotations

import os
import secrets
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from launcher.certs import issue, make_dev_certs, new_ca
from tests.support import (
    ANY_PORT,
    SERVICES,
    Proc,
    await_ready,
    running_in_order,
    spawn_collected,
    wait_answering,
)

INTERNAL_PORTS = {"user_service": "USER_SERVICE_INTERNAL_PORT", "exchange_gateway": "EXCHANGE_GATEWAY_INTERNAL_PORT"}


@dataclass(frozen=True)
class Certs:
    """The development set the stack uses, and a certificate of the same name from another CA."""

    directory: Path
    foreign_key: bytes
    foreign_cert: bytes

    @property
    def ca_path(self) -> Path:
        return self.directory / "ca.crt"

    def read(self, name: str) -> bytes:
        return (self.directory / name).read_bytes()

    def user_credentials(self) -> grpc.ChannelCredentials:
        """What a user's client has: the CA, no certificate."""
        return grpc.ssl_channel_credentials(root_certificates=self.read("ca.crt"))

    def service_credentials(self, service: str) -> grpc.ChannelCredentials:
        """The CA and ``service``'s own certificate and key, as that service's channels present them."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.read("ca.crt"),
            private_key=self.read(f"{service}.key"),
            certificate_chain=self.read(f"{service}.crt"),
        )

    def foreign_credentials(self) -> grpc.ChannelCredentials:
        """The right CA to trust, but a certificate named order_service signed by another CA."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.read("ca.crt"), private_key=self.foreign_key, certificate_chain=self.foreign_cert
        )


@dataclass
class TlsStack:
    env: dict[str, str]
    certs: Certs
    var: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    @property
    def admin_token(self) -> str:
        return self.env["TRADING_ADMIN_TOKEN"]

    @property
    def service_token(self) -> str:
        return self.env["TRADING_SERVICE_TOKEN"]

    def addr(self, name: str) -> str:
        """Users' address of a service."""
        return self.env[SERVICES[name][0]]

    def internal_addr(self, name: str) -> str:
        """The mutual TLS port of a service other services call."""
        return f"127.0.0.1:{self.env[INTERNAL_PORTS[name]]}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.env['SIM_PORT']}"

    def start(self, name: str) -> Proc:
        ready_file = self.var / f"{name}.ready"
        proc = spawn_collected(name, self.env, ready_file)
        self.procs[name] = proc
        await_ready(name, proc.process, ready_file, self.env, proc.logs)
        wait_answering(proc, self.env, lambda addr: grpc.secure_channel(addr, self.certs.user_credentials()))
        return proc

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop(signal.SIGTERM)

    def logs(self) -> str:
        return "\n".join(proc.logs() for proc in self.procs.values())


def base_env(var: Path) -> dict[str, str]:
    """The environment of a stack in ``var`` on loopback port 0, without TLS settings."""
    env = {
        **os.environ,
        **ANY_PORT,
        "USER_SERVICE_INTERNAL_PORT": "0",
        "EXCHANGE_GATEWAY_INTERNAL_PORT": "0",
        "ORDER_METRICS_ADDR": "",
        "USER_METRICS_ADDR": "",
        "GATEWAY_METRICS_ADDR": "",
        "ORDER_DB_URL": f"sqlite:///{var}/order.db",
        "USER_DB_URL": f"sqlite:///{var}/user.db",
        "GATEWAY_DB_URL": f"sqlite:///{var}/gateway.db",
        "TRADING_ADMIN_TOKEN": f"adm_{secrets.token_hex(16)}",
        "TRADING_SERVICE_TOKEN": f"svc_{secrets.token_hex(16)}",
        "BINANCE_ENV": "sim",
        "LOG_LEVEL": "WARNING",
        "ORDER_AUTH_CACHE_SECONDS": "0.5",
    }
    for name in (
        "BINANCE_API_KEY",
        "BINANCE_API_SECRET",
        "BINANCE_BASE_URL",
        "BINANCE_WS_API_URL",
        "SIM_RANDOM_WALK",
        "TRADING_TLS_DIR",
        "TRADING_ALLOW_PLAINTEXT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("tls") / "tls"
    assert make_dev_certs(directory)
    foreign = issue(new_ca("another CA"), "order_service")
    return Certs(directory, foreign.key_pem(), foreign.cert_pem())


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[TlsStack]:
    var = tmp_path_factory.mktemp("tls-e2e")
    env = {**base_env(var), "TRADING_TLS_DIR": str(certs.directory)}
    yield from running_in_order(TlsStack(env, certs, var))
