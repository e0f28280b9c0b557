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
CreateApiKey           yes    no       own user, no wider
ListApiKeys            yes    no       own user only
RevokeApiKey           yes    no       own user, no wider
Deposit, Withdraw      yes    no       no
GetBalances            yes    yes      own user only
ListLedgerEntries      yes    yes      own user only
AuthenticateApiKey     no     yes      no
ReserveFunds           no     yes      no
ReleaseFunds           no     yes      no
SettleTrade            no     yes      no
ListReservations       no     yes      no
GetLedgerTotals        yes    yes      no
ListHouseEntries       yes    no       no
ListAuditEvents        yes    no       no
RecordAuditEvents      no     yes      no
=====================  =====  =======  ===================

"No wider" (``domain.api_keys``): a user's key creates keys only with scopes it has and never
outliving it, and revokes only keys whose scopes it has.

The internal RPCs accept only the service token, as the proto says ("accept only the service
token"): the admin manages users and balances through Deposit/Withdraw, never by posting
reservations or trades by hand. The service token may read users, balances and the ledger,
which the order service needs, and the ledger's totals, which its reconciliation report reads.
With TLS on (``TRADING_TLS_DIR``) the service token counts only from the order service's certificate
on the mutual TLS internal port (``SERVICE_PEERS``, checked by ``Authorizer.check_service_peer``): the
token from users' port, or from another service's certificate, is refused. A user's key or the admin
token never opens an internal RPC, with or without TLS.
Missing, malformed, unknown, revoked or expired credentials give UNAUTHENTICATED (an expired key
is told so); a known caller outside its rights gets PERMISSION_DENIED. Both are logged as security
events with the method, the peer and at most a key id, never a secret, and recorded in the audit
trail. Failed authentications are throttled by client address (``service.guard``): a refused
address gets RESOURCE_EXHAUSTED with RetryInfo for anything but the admin and service tokens, which
are checked first so that a service sharing an address with a guesser keeps working (they are long
random secrets, beyond guessing). For AuthenticateApiKey the address is the end client's, which the
calling service passes as ``client_peer``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from services.user_service.domain import api_keys
from services.user_service.domain import audit as audit_domain
from services.user_service.domain.model import ApiKey, Scope, User
from services.user_service.domain.throttle import client_host
from services.user_service.service.accounts import AuthenticationFailed
from services.user_service.service.app import UserApp
from services.user_service.service.guard import AuthenticationGuard
from shared.auth import bearer_token, same_secret
from shared.errors import PermissionDenied, Unauthenticated
from shared.server import Context
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
    "CreateApiKey": Access.OWNER_KEYS,
    "ListApiKeys": Access.OWNER_KEYS,
    "RevokeApiKey": Access.OWNER_KEYS,
    "Deposit": Access.ADMIN,
    "Withdraw": Access.ADMIN,
    "GetBalances": Access.OWNER_READ,
    "ListLedgerEntries": Access.OWNER_READ,
    "AuthenticateApiKey": Access.INTERNAL,
    "ReserveFunds": Access.INTERNAL,
    "ReleaseFunds": Access.INTERNAL,
    "SettleTrade": Access.INTERNAL,
    "ListReservations": Access.INTERNAL,
    "GetLedgerTotals": Access.OPERATORS,
    "ListHouseEntries": Access.ADMIN,
    "ListAuditEvents": Access.ADMIN,
    "RecordAuditEvents": Access.INTERNAL,
}


SERVICE_PEERS = ServicePeers(
    callers={"RecordAuditEvents": frozenset({"order_service", "exchange_gateway"})},
    default=frozenset({"order_service"}),
)
"""The services whose certificate may use the service token here: the order service, on every RPC, and the
gateway for RecordAuditEvents (its security events)."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller; ``user_id``, ``key_id``, ``scopes`` and ``expire_ms`` are set for API keys only."""

    role: Role
    user_id: str | None = None
    key_id: str | None = None
    scopes: frozenset[Scope] = frozenset()
    expire_ms: int | None = None


def check_access(principal: Principal, rpc: str) -> None:
    """Raise PERMISSION_DENIED unless the caller's role may call ``rpc``."""
    if principal.role not in POLICY[rpc].value:
        raise PermissionDenied(f"{principal.role.value} credentials may not call {rpc}", reason="ROLE_NOT_ALLOWED")


def check_owner(principal: Principal, user_id: str) -> None:
    """Raise PERMISSION_DENIED if an API key asks about another user."""
    if principal.role is Role.USER and principal.user_id != user_id:
        raise PermissionDenied("an API key may only access its own user", reason="NOT_OWNER")


def _peer(context: Context) -> str:
    try:
        return str(context.peer())
    except Exception:  # pragma: no cover - peer is best effort
        return ""


def peer_host(context: Context) -> str:
    """The calling client's address without its port (``domain.throttle.client_host``)."""
    return client_host(_peer(context))


class Authorizer:
    """Resolves bearer tokens to principals and enforces ``POLICY``; every refusal is logged and recorded."""

    def __init__(
        self,
        admin_token: str,
        service_token: str,
        users: UserApp,
        *,
        guard: AuthenticationGuard,
        peers: ServicePeers | None = None,
    ):
        self._admin = admin_token
        self._service = service_token
        self._users = users
        self._peers = peers
        self.guard = guard

    async def authenticate(self, context: Context, rpc: str) -> Principal:
        """Return the caller, or raise UNAUTHENTICATED (RESOURCE_EXHAUSTED for a refused address)."""
        host = peer_host(context)
        try:
            token = bearer_token(context.invocation_metadata())
        except Unauthenticated as exc:
            self.guard.check(host)
            await self.guard.failed(host, rpc, AuthenticationFailed(exc.reason.lower()))
            raise
        is_admin = same_secret(token, self._admin)
        is_service = same_secret(token, self._service)
        if is_admin:
            return Principal(Role.ADMIN)
        if is_service:
            try:
                self.check_service_peer(context, rpc)
            except (PermissionDenied, Unauthenticated) as exc:
                self.guard.denied(self.actor(context, rpc, Principal(Role.SERVICE)), exc.reason)
                raise
            return Principal(Role.SERVICE)
        if not api_keys.looks_like_api_key(token):
            self.guard.check(host)
            failure = AuthenticationFailed("unknown token")
            await self.guard.failed(host, rpc, failure)
            raise failure
        key, user = await self.authenticate_key(token, host, rpc)
        return Principal(Role.USER, user.user_id, key.key_id, key.scopes, key.expire_ms)

    async def authenticate_key(self, api_key: str, host: str, rpc: str) -> tuple[ApiKey, User]:
        """Resolve a user's API key presented from ``host`` (throttled; a failure is logged and recorded)."""
        self.guard.check(host)
        try:
            return await self._users.authenticate(api_key)
        except AuthenticationFailed as exc:
            await self.guard.failed(host, rpc, exc)
            raise

    def check_service_peer(self, context: Context, rpc: str) -> None:
        """With TLS, refuse the service token unless the caller's certificate is a service meant to call ``rpc``."""
        if self._peers is not None:
            self._peers.check(context, rpc)

    async def authorize(self, context: Context, rpc: str) -> Principal:
        """Authenticate, then check the caller's role against the policy of ``rpc``."""
        principal = await self.authenticate(context, rpc)
        try:
            check_access(principal, rpc)
        except PermissionDenied as exc:
            self.denied(context, rpc, principal, exc)
            raise
        return principal

    def owner(self, context: Context, rpc: str, principal: Principal, user_id: str) -> None:
        """Check that an API key asks only about its own user."""
        try:
            check_owner(principal, user_id)
        except PermissionDenied as exc:
            self.denied(context, rpc, principal, exc)
            raise

    def denied(self, context: Context, rpc: str, principal: Principal, error: PermissionDenied) -> None:
        """Log and record a refused authorization (also one a use case refused: a key wider than its creator)."""
        self.guard.denied(self.actor(context, rpc, principal), error.reason)

    @staticmethod
    def actor(context: Context, rpc: str, principal: Principal) -> audit_domain.Actor:
        """The caller as the use cases and the audit trail see it."""
        return audit_domain.Actor(
            role=audit_domain.Role(principal.role.value),
            user_id=principal.user_id or "",
            key_id=principal.key_id or "",
            scopes=principal.scopes,
            expire_ms=principal.expire_ms,
            peer=peer_host(context),
            rpc=rpc,
        )
