"""The user service's audit trail as the order service's ``AuditPort``: RecordAuditEvents with the service token.

Records are queued and sent in batches in the background (``shared.audit_trail``), so a use case
that records a security event never waits for, nor fails with, the user service.
"""

from __future__ import annotations

import grpc

from shared.audit_trail import AuditTrailClient

SOURCE = "order_service"


class GrpcAuditTrail(AuditTrailClient):
    """Queues the order service's security events and delivers them to the user service."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str, *, timeout: float = 5.0):
        super().__init__(channel, service_token, source=SOURCE, timeout=timeout)
