"""TLS on every gRPC port and mutual TLS between the services.

``TRADING_TLS_DIR`` names a folder with ``ca.crt`` and, per service, ``<service>.crt`` and
``<service>.key`` (``make certs`` writes a development set to ``var/tls``). When it is set:

- every service serves TLS only (TLS 1.2 or newer, gRPC's default minimum) on its address; users'
  clients need only the CA (``grpcurl -cacert var/tls/ca.crt ...``) and present no certificate;
- the services that are called by other services (the user service and the gateway) also listen on an
  internal port (``USER_SERVICE_INTERNAL_PORT`` [50062], ``EXCHANGE_GATEWAY_INTERNAL_PORT`` [50063], on the
  host of their address) that requires a client certificate signed by the CA: mutual TLS. gRPC Python
  offers a server either "no client certificate" or "a verified client certificate required"
  (``ssl_server_credentials(require_client_auth=...)``), never "asked for but optional", so users' port
  and the services' port are two ports;
- the services call each other on those internal ports, presenting their own certificate, and the
  service token counts only on a connection whose verified certificate names a service that is meant to
  call the RPC (``ServicePeers``: the common name is the service's name). The token alone, from users'
  port or from another service's certificate, is refused.

Without ``TRADING_TLS_DIR`` everything is plaintext, which a service accepts only on a loopback address:
listening anywhere else needs ``TRADING_ALLOW_PLAINTEXT=1`` (``check_plaintext_bind``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from shared.config import ConfigError, env_bool, env_int, env_str
from shared.errors import PermissionDenied, Unauthenticated
from shared.logs import security_log

TLS_DIR = "TRADING_TLS_DIR"
ALLOW_PLAINTEXT = "TRADING_ALLOW_PLAINTEXT"
USER_SERVICE_INTERNAL_PORT = "USER_SERVICE_INTERNAL_PORT"
EXCHANGE_GATEWAY_INTERNAL_PORT = "EXCHANGE_GATEWAY_INTERNAL_PORT"
DEFAULT_USER_SERVICE_INTERNAL_PORT = 50062
DEFAULT_EXCHANGE_GATEWAY_INTERNAL_PORT = 50063

SERVICES = ("order_service", "user_service", "exchange_gateway")
"""The services with a certificate; each certificate's common name is the service's name."""


def _host(addr: str) -> str:
    host = addr.rsplit(":", 1)[0] if ":" in addr else addr
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_loopback(addr: str) -> bool:
    """Whether ``host:port`` names a loopback address only (127.0.0.0/8, ::1, localhost); 0.0.0.0 is not."""
    host = _host(addr)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_plaintext_bind(bind: str, variable: str, allow_plaintext: bool) -> None:
    """Refuse (ConfigError) to serve plaintext on a non-loopback ``bind`` unless explicitly allowed."""
    if allow_plaintext or is_loopback(bind):
        return
    raise ConfigError(
        f"refusing to listen on {bind} ({variable or 'the listen address'}) without TLS: "
        f"set {TLS_DIR} to a folder with ca.crt and the services' certificates (make certs writes var/tls), "
        f"or {ALLOW_PLAINTEXT}=1 to serve plaintext on a network you trust"
    )


@dataclass(frozen=True)
class ServiceIdentity:
    """One service's certificate and key, and the CA that signs every service's certificate."""

    service: str
    ca: bytes
    cert: bytes
    key: bytes = field(repr=False)

    @classmethod
    def load(cls, directory: str | Path, service: str) -> ServiceIdentity:
        """Read ``ca.crt``, ``<service>.crt`` and ``<service>.key`` from ``directory`` (ConfigError names a bad one)."""
        folder = Path(directory)
        if not folder.is_dir():
            raise ConfigError(f"{TLS_DIR}={directory} is not a folder (make certs writes a development set to var/tls)")
        contents = {}
        for name in ("ca.crt", f"{service}.crt", f"{service}.key"):
            path = folder / name
            try:
                contents[name] = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{TLS_DIR}: cannot read {path}: {exc.strerror or exc}") from None
            if b"-----BEGIN " not in contents[name]:
                raise ConfigError(f"{TLS_DIR}: {path} is not a PEM file")
        return cls(service, contents["ca.crt"], contents[f"{service}.crt"], contents[f"{service}.key"])

    def server_credentials(self, *, require_client_auth: bool) -> grpc.ServerCredentials:
        """TLS for a server port; with ``require_client_auth`` only clients with a certificate of the CA connect."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca if require_client_auth else None,
            require_client_auth=require_client_auth,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """TLS for a channel to another service: verify it with the CA and present this service's certificate."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )


@dataclass(frozen=True)
class ServerSecurity:
    """How a service's gRPC server listens: plaintext or TLS, plus the mutual TLS port for internal calls."""

    identity: ServiceIdentity | None = None
    internal_port: int | None = None
    """The port (on the host of the listen address) that requires a service certificate; TLS only."""
    allow_plaintext: bool = False
    variable: str = ""
    """The variable that sets the listen address, named in the refusal to serve plaintext."""

    def internal_bind(self, bind: str) -> str | None:
        """The internal port's address beside ``bind``, or None when there is none."""
        if self.identity is None or self.internal_port is None:
            return None
        host = bind.rsplit(":", 1)[0] if ":" in bind else bind
        return f"{host}:{self.internal_port}"


@dataclass(frozen=True)
class TlsSettings:
    """``TRADING_TLS_DIR``, ``TRADING_ALLOW_PLAINTEXT`` and the internal ports, as every service reads them."""

    directory: str = ""
    allow_plaintext: bool = False
    user_service_internal_port: int = DEFAULT_USER_SERVICE_INTERNAL_PORT
    exchange_gateway_internal_port: int = DEFAULT_EXCHANGE_GATEWAY_INTERNAL_PORT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TlsSettings:
        """Read the TLS variables; ConfigError naming a malformed one."""
        env = os.environ if env is None else env
        settings = cls(
            directory=env_str(env, TLS_DIR, ""),
            allow_plaintext=env_bool(env, ALLOW_PLAINTEXT, False),
            user_service_internal_port=env_int(env, USER_SERVICE_INTERNAL_PORT, DEFAULT_USER_SERVICE_INTERNAL_PORT),
            exchange_gateway_internal_port=env_int(
                env, EXCHANGE_GATEWAY_INTERNAL_PORT, DEFAULT_EXCHANGE_GATEWAY_INTERNAL_PORT
            ),
        )
        for variable, port in (
            (USER_SERVICE_INTERNAL_PORT, settings.user_service_internal_port),
            (EXCHANGE_GATEWAY_INTERNAL_PORT, settings.exchange_gateway_internal_port),
        ):
            if not 0 <= port < 65536:
                raise ConfigError(f"{variable} must be a port between 0 (any free port) and 65535, got {port}")
        return settings

    @property
    def enabled(self) -> bool:
        """Whether the services talk TLS."""
        return bool(self.directory)

    def internal_port(self, service: str) -> int | None:
        """The mutual TLS port of a service other services call (None for the others)."""
        if service == "user_service":
            return self.user_service_internal_port
        if service == "exchange_gateway":
            return self.exchange_gateway_internal_port
        return None

    def server_security(self, service: str, bind: str, variable: str) -> ServerSecurity:
        """How ``service``'s server listens on ``bind`` (set by ``variable``), checked now so a start fails early.

        With TLS its certificate and key are read (ConfigError if unreadable); without, plaintext on a
        non-loopback ``bind`` is refused unless ``allow_plaintext``.
        """
        if not self.enabled:
            check_plaintext_bind(bind, variable, self.allow_plaintext)
            return ServerSecurity(None, None, self.allow_plaintext, variable)
        identity = ServiceIdentity.load(self.directory, service)
        return ServerSecurity(identity, self.internal_port(service), self.allow_plaintext, variable)

    def target(self, service: str, addr: str) -> str:
        """Where to call ``service`` at ``addr``: its internal port on the same host with TLS, else ``addr``."""
        port = self.internal_port(service)
        if not self.enabled or port is None:
            return addr
        host = addr.rsplit(":", 1)[0] if ":" in addr else addr
        return f"{host}:{port}"


PLAINTEXT = TlsSettings()
"""No TLS: the default of a configuration built directly (tests)."""


# --- who is on the other end --------------------------------------------------------------------


def peer_service(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    """The service named by the caller's certificate, or None without one.

    gRPC puts the certificate's names in the auth context only after the TLS handshake verified it
    against the CA, and only the internal ports ask for a certificate: users' port never has one.
    """
    try:
        auth = context.auth_context()
    except Exception:  # pragma: no cover - a context without a transport (tests' fakes)
        return None
    if auth.get("transport_security_type") != [b"ssl"]:
        return None
    names = list(auth.get("x509_common_name") or ())
    if len(names) != 1:
        return None
    return names[0].decode(errors="replace")


@dataclass(frozen=True)
class ServicePeers:
    """Which services' certificates may use the service token, per RPC (a service checks it with TLS on).

    ``callers`` maps an RPC to the services meant to call it; any other RPC takes ``default``.
    """

    callers: Mapping[str, frozenset[str]]
    default: frozenset[str]

    def allowed(self, rpc: str) -> frozenset[str]:
        """The services whose certificate may call ``rpc`` with the service token."""
        return self.callers.get(rpc, self.default)

    def check(self, context: grpc.aio.ServicerContext[Any, Any], rpc: str) -> None:
        """Raise UNAUTHENTICATED without a service certificate, PERMISSION_DENIED from the wrong service's.

        Refusals are logged as security events with the RPC, the peer and the certificate's name.
        """
        peer = peer_service(context)
        if peer is None:
            _log_refusal(context, rpc, "no service certificate", "")
            raise Unauthenticated(
                "the service token is accepted only over mutual TLS, with a service certificate, on the internal port",
                reason="SERVICE_CERTIFICATE_REQUIRED",
            )
        if peer not in self.allowed(rpc):
            _log_refusal(context, rpc, "service certificate not allowed", peer)
            raise PermissionDenied(f"{rpc} is not called by {peer}", reason="SERVICE_NOT_ALLOWED")


def _log_refusal(context: grpc.aio.ServicerContext[Any, Any], rpc: str, why: str, peer_name: str) -> None:
    try:
        peer = str(context.peer())
    except Exception:  # pragma: no cover - peer is best effort
        peer = ""
    extra = {"event": "service_peer_refused", "rpc": rpc, "why": why, "peer": peer}
    if peer_name:
        extra["certificate"] = peer_name
    security_log.warning("service token refused", extra=extra)
