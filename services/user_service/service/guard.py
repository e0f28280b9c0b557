"""Guarding authentication: throttling failed attempts, and recording failures, refusals and denials.

Every failed authentication (missing, malformed or unknown credentials, a wrong secret, a revoked
or expired key) is counted by client address and by key (``domain.throttle``), logged as a
security event and counted in the audit trail (AUTHENTICATION_FAILED, or EXPIRED_API_KEY_USED,
aggregated per address and key per window). After a few failures the answer is held back a little;
after more the address is refused for a while (``ClientThrottled``: RESOURCE_EXHAUSTED with
RetryInfo), which is logged and recorded once (AUTHENTICATION_THROTTLED). Permission denials are
logged and counted (PERMISSION_DENIED, aggregated per address, key and RPC per window). Nothing
secret is logged or recorded: at most a key id or its prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from services.user_service.domain.audit import Actor, AuditEvent, AuditKind, by
from services.user_service.domain.throttle import Throttle
from services.user_service.service.accounts import ApiKeyExpired, AuthenticationFailed
from services.user_service.service.audit import AuditTrail
from shared.errors import ResourceExhausted
from shared.logs import security_log
from shared.timeutil import iso_from_ms, now_ms


class ClientThrottled(ResourceExhausted):
    """The client's address is refused for a while after repeated failed authentications."""

    default_reason = "AUTHENTICATION_THROTTLED"


class AuthenticationGuard:
    """Throttles failed authentications and records failures, refusals and denials (module docstring)."""

    def __init__(
        self,
        throttle: Throttle,
        trail: AuditTrail,
        *,
        clock: Callable[[], int] = now_ms,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.throttle = throttle
        self.trail = trail
        self._clock = clock
        self._sleep = sleep

    def check(self, host: str) -> None:
        """Raise ClientThrottled while ``host`` is refused."""
        left_ms = self.throttle.refused_for_ms(host, self._clock())
        if left_ms:
            raise ClientThrottled(
                "too many failed authentications from this address; try again later",
                retry_after=left_ms / 1000.0,
                metadata={"retry_after_ms": str(left_ms)},
            )

    async def failed(self, host: str, rpc: str, failure: AuthenticationFailed) -> None:
        """Count, log and record one failed authentication from ``host``, then hold the answer as the throttle says."""
        now = self._clock()
        verdict = self.throttle.failed(host, failure.key_id, now)
        expired = isinstance(failure, ApiKeyExpired)
        fields = {"event": "authentication_failed", "rpc": rpc, "why": failure.why, "peer": host}
        if failure.key_id_prefix:
            fields["key_id_prefix"] = failure.key_id_prefix
        security_log.warning("authentication failed", extra=fields)
        details = {"reasons": failure.why, "rpcs": rpc}
        if failure.key_id_prefix and not failure.key_id:
            details["key_id_prefixes"] = failure.key_id_prefix  # a guess: not a key that exists
        self.trail.count(
            AuditEvent(
                kind=AuditKind.EXPIRED_API_KEY_USED if expired else AuditKind.AUTHENTICATION_FAILED,
                event_ms=now,
                user_id=failure.user_id,
                key_id=failure.key_id,
                peer=host,
                details=details,
            )
        )
        if verdict.ban_started:
            until = iso_from_ms(verdict.banned_until_ms)
            security_log.warning(
                "address refused after repeated failed authentications",
                extra={
                    "event": "authentication_throttled",
                    "peer": host,
                    "failures": verdict.failures,
                    "until": until,
                    "trigger": verdict.trigger,
                },
            )
            self.trail.record(
                AuditEvent(
                    kind=AuditKind.AUTHENTICATION_THROTTLED,
                    event_ms=now,
                    key_id=failure.key_id,
                    user_id=failure.user_id,
                    peer=host,
                    details={"until": until, "failures": str(verdict.failures), "trigger": verdict.trigger},
                )
            )
        if verdict.delay_ms:
            await self._sleep(verdict.delay_ms / 1000.0)

    def denied(self, actor: Actor, reason: str) -> None:
        """Log and count a refused authorization of a known caller."""
        fields = {"event": "permission_denied", "rpc": actor.rpc, "role": actor.role.value, "peer": actor.peer}
        if actor.key_id:
            fields["key_id"] = actor.key_id
        fields["reason"] = reason
        security_log.warning("permission denied", extra=fields)
        self.trail.count(
            by(actor, AuditKind.PERMISSION_DENIED, self._clock(), user_id=actor.user_id, details={"reasons": reason})
        )
