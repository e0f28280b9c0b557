"""Who is calling, and what they may do.

Every RPC sends ``authorization: Bearer <token>``. The token is the admin token, the service token,
or a user's API key (``tk_...``). The matrix (``POLICY``):

=====================  =====  =======  ===================
RPC                    admin  service  user's API key
=====================  =====  =======  ===================
CreateUser             yes    no       no
GetUser                yes    yes      own user only
ListUsers              yes    no       no
UpdateUserStatus       yes    no       no
CreateApiKey           yes    no       no
ListApiKeys            yes    no       own user only
RevokeApiKey           yes    no       no
Deposit, Withdraw      yes    no       no
GetBalances            yes    yes      own user only
ListLedgerEntries      yes    yes      own user only
AuthenticateApiKey     no     yes      no
ReserveFunds           no     yes      no
ReleaseFunds           no     yes      no
SettleTrade            no     yes      no
GetLedgerTotals        yes    yes      no
ListHouseEntries       yes    no       no
=====================  =====  =======  ===================

The internal RPCs accept only the service token, as the proto says ("accept only the service
token"): the admin manages users and balances through Deposit/Withdraw, never by posting
reservations or trades by hand. The service token may read users, balances and the ledger,
which the order service needs, and the ledger's totals, which its reconciliation report reads.
With TLS on (``TRADING_TLS_DIR``) the service token counts only from the order service's certificate
on the mutual TLS internal port (``SERVICE_PEERS``, checked by ``Authorizer.check_service_peer``): the
token from users' port, or from another service's certificate, is refused. A user's key or the admin
token never opens an internal RPC, with or without TLS.
Missing, malformed, unknown or revoked credentials give UNAUTHENTICATED; a known caller outside
its rights gets PERMISSION_DENIED. Both are logged as security events with the method, the peer
and at most a key id prefix, never a secret.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import grpc

from services.user_service.domain import api_keys
from services.user_service.service.accounts import AuthenticationFailed
from services.user_service.service.app import UserService
from shared.auth import bearer_token, same_secret
from shared.errors import PermissionDenied, Unauthenticated
from shared.logs import security_log
from shared.tls import ServicePeers


class Role(enum.Enum):
    """The kinds of callers."""

    ADMIN = "admin"
    SERVICE = "service"
    USER = "user"


class Access(enum.Enum):
    """Who may call an RPC."""

    ADMIN = frozenset({Role.ADMIN})
    INTERNAL = frozenset({Role.SERVICE})
    OWNER_READ = frozenset({Role.ADMIN, Role.SERVICE, Role.USER})
    OWNER_KEYS = frozenset({Role.ADMIN, Role.USER})
    OPERATORS = frozenset({Role.ADMIN, Role.SERVICE})


POLICY: dict[str, Access] = {
    "CreateUser": Access.ADMIN,
    "GetUser": Access.OWNER_READ,
    "ListUsers": Access.ADMIN,
    "UpdateUserStatus": Access.ADMIN,
    "CreateApiKey": Access.ADMIN,
    "ListApiKeys": Access.OWNER_KEYS,
    "RevokeApiKey": Access.ADMIN,
    "Deposit": Access.ADMIN,
    "Withdraw": Access.ADMIN,
    "GetBalances": Access.OWNER_READ,
    "ListLedgerEntries": Access.OWNER_READ,
    "AuthenticateApiKey": Access.INTERNAL,
    "ReserveFunds": Access.INTERNAL,
    "ReleaseFunds": Access.INTERNAL,
    "SettleTrade": Access.INTERNAL,
    "GetLedgerTotals": Access.OPERATORS,
    "ListHouseEntries": Access.ADMIN,
}


SERVICE_PEERS = ServicePeers(callers={}, default=frozenset({"order_service"}))
"""The services whose certificate may use the service token here: the order service, on every RPC."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller; ``user_id`` and ``key_id`` are set for API keys only."""

    role: Role
    user_id: str | None = None
    key_id: str | None = None


def check_access(principal: Principal, rpc: str) -> None:
    """Raise PERMISSION_DENIED unless the caller's role may call ``rpc``."""
    if principal.role not in POLICY[rpc].value:
        raise PermissionDenied(f"{principal.role.value} credentials may not call {rpc}", reason="ROLE_NOT_ALLOWED")


def check_owner(principal: Principal, user_id: str) -> None:
    """Raise PERMISSION_DENIED if an API key asks about another user."""
    if principal.role is Role.USER and principal.user_id != user_id:
        raise PermissionDenied("an API key may only access its own user", reason="NOT_OWNER")


def _peer(context: grpc.aio.ServicerContext) -> str:
    try:
        return str(context.peer())
    except Exception:  # pragma: no cover - peer is best effort
        return ""


class Authorizer:
    """Resolves bearer tokens to principals and enforces ``POLICY``, logging every refusal."""

    def __init__(self, admin_token: str, service_token: str, users: UserService, *, peers: ServicePeers | None = None):
        self._admin = admin_token
        self._service = service_token
        self._users = users
        self._peers = peers

    async def authenticate(self, context: grpc.aio.ServicerContext, rpc: str) -> Principal:
        """Return the caller, or raise UNAUTHENTICATED (and log a security event)."""
        try:
            token = bearer_token(context.invocation_metadata())
        except Unauthenticated as exc:
            self._log_failure(context, rpc, exc.reason.lower())
            raise
        is_admin = same_secret(token, self._admin)
        is_service = same_secret(token, self._service)
        if is_admin:
            return Principal(Role.ADMIN)
        if is_service:
            self.check_service_peer(context, rpc)
            return Principal(Role.SERVICE)
        if not api_keys.looks_like_api_key(token):
            self._log_failure(context, rpc, "unknown bearer token")
            raise AuthenticationFailed("unknown bearer token")
        try:
            key, user = await self._users.authenticate(token)
        except AuthenticationFailed as exc:
            self._log_failure(context, rpc, exc.why, exc.key_id_prefix)
            raise
        return Principal(Role.USER, user_id=user.user_id, key_id=key.key_id)

    def check_service_peer(self, context: grpc.aio.ServicerContext, rpc: str) -> None:
        """With TLS, refuse the service token unless the caller's certificate is a service meant to call ``rpc``."""
        if self._peers is not None:
            self._peers.check(context, rpc)

    async def authorize(self, context: grpc.aio.ServicerContext, rpc: str) -> Principal:
        """Authenticate, then check the caller's role against the policy of ``rpc``."""
        principal = await self.authenticate(context, rpc)
        try:
            check_access(principal, rpc)
        except PermissionDenied:
            self.log_denied(context, rpc, principal)
            raise
        return principal

    def owner(self, context: grpc.aio.ServicerContext, rpc: str, principal: Principal, user_id: str) -> None:
        """Check that an API key asks only about its own user."""
        try:
            check_owner(principal, user_id)
        except PermissionDenied:
            self.log_denied(context, rpc, principal)
            raise

    def log_failure(self, context: grpc.aio.ServicerContext, rpc: str, why: str, key_id_prefix: str = "") -> None:
        """Log a failed authentication (public for AuthenticateApiKey)."""
        self._log_failure(context, rpc, why, key_id_prefix)

    @staticmethod
    def _log_failure(context: grpc.aio.ServicerContext, rpc: str, why: str, key_id_prefix: str = "") -> None:
        extra = {"event": "authentication_failed", "rpc": rpc, "why": why, "peer": _peer(context)}
        if key_id_prefix:
            extra["key_id_prefix"] = key_id_prefix
        security_log.warning("authentication failed", extra=extra)

    @staticmethod
    def log_denied(context: grpc.aio.ServicerContext, rpc: str, principal: Principal) -> None:
        """Log a refused authorization."""
        extra = {"event": "permission_denied", "rpc": rpc, "role": principal.role.value, "peer": _peer(context)}
        if principal.key_id:
            extra["key_id_prefix"] = principal.key_id[:14]
        security_log.warning("permission denied", extra=extra)
