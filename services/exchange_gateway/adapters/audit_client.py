"""The user service's audit trail as the gateway's ``AuditPort``: RecordAuditEvents with the service token.

Records are queued (``shared.audit.AuditQueue``) and sent in batches in the background, so the
gateway never waits for, nor fails with, the user service when it records a security event: an order
on the account it did not place (FOREIGN_ORDER), or the exchange's 429/418 (EXCHANGE_RATE_LIMITED).
"""

from __future__ import annotations

import grpc

from shared.audit import AuditQueue, AuditRecord
from shared.client import ServiceCaller
from shared.proto_time import ts_from_ms
from shared.timeutil import now_ms
from trading.user.v1 import user_pb2, user_service_pb2, user_service_pb2_grpc

SOURCE = "exchange_gateway"


def encode_record(record: AuditRecord) -> user_pb2.AuditEvent:
    """One record as RecordAuditEvents takes it."""
    return user_pb2.AuditEvent(
        kind=user_pb2.AuditEventKind.Value(f"AUDIT_EVENT_KIND_{record.kind}"),  # the enum value by its name
        event_time=ts_from_ms(record.event_ms),
        source=SOURCE,
        actor=record.actor,
        actor_key_id=record.actor_key_id,
        user_id=record.user_id,
        key_id=record.key_id,
        peer=record.peer,
        rpc=record.rpc,
        details=dict(record.details),
        source_event_id=record.record_id,
    )


class GrpcAuditTrail:
    """Queues the gateway's security events and delivers them to the user service."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str, *, timeout: float = 5.0):
        self.stub = user_service_pb2_grpc.UserServiceStub(channel)
        self.call = ServiceCaller(service_token, what="user service (audit trail)")
        self.timeout = timeout
        self.queue = AuditQueue(self._send)

    def record(self, record: AuditRecord) -> None:
        self.queue.record(record)

    def rate_limited(self, status: int, retry_after_s: float, path: str) -> None:
        """Record that the exchange answered 429 (rate limit) or 418 (IP ban) and all sending paused."""
        details = {"http_status": str(status), "retry_after_s": f"{retry_after_s:g}", "path": path}
        self.record(AuditRecord("EXCHANGE_RATE_LIMITED", now_ms(), details=details))

    def start(self) -> None:
        """Start delivering in the background."""
        self.queue.start()

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop, delivering what is left within ``timeout`` seconds."""
        await self.queue.stop(timeout)

    async def _send(self, records: list[AuditRecord]) -> None:
        request = user_service_pb2.RecordAuditEventsRequest(events=[encode_record(r) for r in records])
        await self.call(self.stub.RecordAuditEvents, request, timeout=self.timeout)
