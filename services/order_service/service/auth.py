"""Who is calling: API key -> user, through the user service, cached for a few seconds.

The cache is what keeps the user service off the hot path; its short lifetime is what honours a
revoked key or a suspended user within seconds. Concurrent requests with the same uncached key
share one lookup. The admin and service tokens are not users: they get PERMISSION_DENIED here.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable

from services.order_service.domain.model import Caller
from services.order_service.service.ports import UserPort
from shared.auth import same_secret
from shared.errors import PermissionDenied
from shared.logs import security_log


class Authenticator:
    """Resolves API keys to callers with a small time-limited cache."""

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
    ):
        self.users = users
        self.ttl = ttl
        self.reserved_tokens = tuple(t for t in reserved_tokens if t)
        self.admin_token = admin_token
        self.max_entries = max_entries
        self.timeout = timeout
        self.clock = clock
        self._cache: OrderedDict[str, tuple[float, Caller]] = OrderedDict()
        self._lookups: dict[str, asyncio.Task[Caller]] = {}

    async def authenticate(self, api_key: str) -> Caller:
        """The user ``api_key`` acts for; UNAUTHENTICATED if unknown or revoked."""
        now = self.clock()
        cached = self._cache.get(api_key)
        if cached is not None and cached[0] > now:
            return cached[1]
        for token in self.reserved_tokens:
            if same_secret(api_key, token):
                raise PermissionDenied(
                    "the admin and service tokens do not act for a user; call the order service with a user's API key",
                    reason="NOT_A_USER",
                )
        lookup = self._lookups.get(api_key)
        if lookup is None:
            # A task of its own, so that a caller going away does not fail the others waiting on it.
            lookup = asyncio.create_task(self._lookup(api_key))
            self._lookups[api_key] = lookup
            lookup.add_done_callback(lambda _t: self._lookups.pop(api_key, None))
        return await asyncio.shield(lookup)

    def require_admin(self, token: str) -> None:
        """Allow only the admin token (the operator's RPCs); PERMISSION_DENIED for anything else."""
        if not self.admin_token or not same_secret(token, self.admin_token):
            security_log.warning("admin RPC refused", extra={"reason": "NOT_ADMIN"})
            raise PermissionDenied("this RPC needs the admin token", reason="ADMIN_ONLY")

    async def _lookup(self, api_key: str) -> Caller:
        caller = await self.users.authenticate(api_key, self.timeout)
        self._remember(api_key, caller)
        return caller

    def _remember(self, api_key: str, caller: Caller) -> None:
        self._cache[api_key] = (self.clock() + self.ttl, caller)
        self._cache.move_to_end(api_key)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    def forget(self, api_key: str | None = None) -> None:
        """Drop one cached key, or all of them."""
        if api_key is None:
            self._cache.clear()
        else:
            self._cache.pop(api_key, None)
