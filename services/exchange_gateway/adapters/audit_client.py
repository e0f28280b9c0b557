"""The user service's audit trail as the gateway's ``AuditPort``: RecordAuditEvents with the service token.

Records are queued and sent in batches in the background (``shared.audit_trail``), so the
gateway never waits for, nor fails with, the user service when it records a security event: an order
on the account it did not place (FOREIGN_ORDER), or the exchange's 429/418 (EXCHANGE_RATE_LIMITED).
"""

from __future__ import annotations

import grpc

from shared.audit import AuditRecord
from shared.audit_trail import AuditTrailClient
from shared.timeutil import now_ms

SOURCE = "exchange_gateway"


class GrpcAuditTrail(AuditTrailClient):
    """Queues the gateway's security events and delivers them to the user service."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str, *, timeout: float = 5.0):
        super().__init__(channel, service_token, source=SOURCE, timeout=timeout)

    def rate_limited(self, status: int, retry_after_s: float, path: str) -> None:
        """Record that the exchange answered 429 (rate limit) or 418 (IP ban) and all sending paused."""
        details = {"http_status": str(status), "retry_after_s": f"{retry_after_s:g}", "path": path}
        self.record(AuditRecord("EXCHANGE_RATE_LIMITED", now_ms(), details=details))
