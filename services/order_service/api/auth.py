"""Who is calling: API key -> user, through the user service, cached for a few seconds.

The cache is what keeps the user service off the hot path; its short lifetime is what honours a
revoked key or a suspended user within seconds, and an entry never outlives its key's expiry.
Concurrent requests with the same uncached key share one lookup. The client's address goes to the
user service with each lookup (``client_peer``), so that failed guesses are throttled per client
rather than per order service; a refused client gets RESOURCE_EXHAUSTED from there.

Scopes: every RPC asks for one (``Scope.READ`` to list, get and watch; ``Scope.TRADE`` to place and
cancel). A key without it is PERMISSION_DENIED. The admin and service tokens are not users: they get
PERMISSION_DENIED here too. Each denial, each refused admin RPC and each admin action is logged as a
security event and sent to the audit trail (``AuditPort``), never with the token or key itself.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

from services.order_service.domain.model import Caller, Scope
from services.order_service.service.ports import AuditPort, UserPort
from shared.audit import AuditRecord
from shared.auth import same_secret
from shared.errors import PermissionDenied
from shared.logs import security_log
from shared.timeutil import now_ms


class Authenticator:
    """Resolves API keys to callers with a small time-limited cache, and checks scopes and the admin token."""

    def __init__(
        self,
        users: UserPort,
        *,
        ttl: float = 2.0,
        reserved_tokens: tuple[str, ...] = (),
        admin_token: str = "",
        max_entries: int = 10_000,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], int] = now_ms,
        audit: AuditPort | None = None,
    ):
        self.users = users
        self.ttl = ttl
        self.reserved_tokens = tuple(t for t in reserved_tokens if t)
        self.admin_token = admin_token
        self.max_entries = max_entries
        self.timeout = timeout
        self.clock = clock
        self.wall = wall
        self.audit = audit
        self._cache: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        self._lookups: dict[str, asyncio.Task[Caller]] = {}

    async def authenticate(self, api_key: str, *, scope: Scope = Scope.READ, peer: str = "", rpc: str = "") -> Caller:
        """The user ``api_key`` acts for; UNAUTHENTICATED if unknown, revoked or expired; PERMISSION_DENIED
        if the key lacks ``scope``. ``peer`` is the client's address, ``rpc`` the method (for the audit trail).
        """
        caller = await self._resolve(api_key, peer, rpc)
        if scope not in caller.scopes:
            has = ",".join(sorted(caller.scopes))
            self._denied(
                "SCOPE_MISSING",
                peer,
                rpc,
                actor="user",
                caller=caller,
                details={"needed": str(scope), "has": has},
            )
            raise PermissionDenied(
                f"this API key may not call {rpc or 'this RPC'}: it needs scope {scope}, the key has {has}",
                reason="SCOPE_MISSING",
                metadata={"needed": str(scope), "has": has},
            )
        return caller

    async def _resolve(self, api_key: str, peer: str, rpc: str) -> Caller:
        now = self.clock()
        cached = self._cache.get(api_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        for token in self.reserved_tokens:
            if same_secret(api_key, token):
                actor = "admin" if self.admin_token and same_secret(api_key, self.admin_token) else "service"
                self._denied("NOT_A_USER", peer, rpc, actor=actor)
                raise PermissionDenied(
                    "the admin and service tokens do not act for a user; call the order service with a user's API key",
                    reason="NOT_A_USER",
                )
        lookup = self._lookups.get(api_key)
        if lookup is None:
            # A task of its own, so that a caller going away does not fail the others waiting on it.
            lookup = asyncio.create_task(self._lookup(api_key, peer))
            self._lookups[api_key] = lookup
            lookup.add_done_callback(lambda _t: self._lookups.pop(api_key, None))
        return await asyncio.shield(lookup)

    def require_admin(self, token: str, *, peer: str = "", rpc: str = "") -> None:
        """Allow only the admin token (the operator's RPCs); PERMISSION_DENIED for anything else."""
        if not self.admin_token or not same_secret(token, self.admin_token):
            self._denied("ADMIN_ONLY", peer, rpc)
            raise PermissionDenied("this RPC needs the admin token", reason="ADMIN_ONLY")

    def admin_action(self, rpc: str, details: Mapping[str, str], *, peer: str = "") -> None:
        """Record a change an operator made with the admin token (ADMIN_ACTION in the audit trail)."""
        security_log.info("admin action", extra={"event": "admin_action", "rpc": rpc, "peer": peer, **details})
        self._record(AuditRecord("ADMIN_ACTION", self.wall(), actor="admin", peer=peer, rpc=rpc, details=details))

    def _denied(
        self,
        reason: str,
        peer: str,
        rpc: str,
        *,
        actor: str = "",
        caller: Caller | None = None,
        details: Mapping[str, str] | None = None,
    ) -> None:
        fields = {"event": "permission_denied", "reason": reason, "rpc": rpc, "peer": peer, "role": actor}
        if caller is not None:
            fields["key_id"] = caller.key_id
        security_log.warning("permission denied", extra=fields)
        self._record(
            AuditRecord(
                "PERMISSION_DENIED",
                self.wall(),
                actor=actor,
                actor_key_id=caller.key_id if caller else "",
                user_id=caller.user_id if caller else "",
                peer=peer,
                rpc=rpc,
                details={"reasons": reason, **(details or {})},
            )
        )

    def _record(self, record: AuditRecord) -> None:
        if self.audit is not None:
            self.audit.record(record)

    async def _lookup(self, api_key: str, peer: str) -> Caller:
        caller = await self.users.authenticate(api_key, self.timeout, client_peer=peer)
        self._remember(api_key, caller)
        return caller

    def _remember(self, api_key: str, caller: Caller) -> None:
        lifetime = self.ttl
        if caller.expire_ms is not None:
            lifetime = min(lifetime, (caller.expire_ms - self.wall()) / 1000.0)
            if lifetime <= 0:
                return
        self._cache[api_key] = (self.clock() + lifetime, caller)
        self._cache.move_to_end(api_key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)
