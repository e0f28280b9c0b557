"""The user service's audit trail as the order service's ``AuditPort``: RecordAuditEvents with the service token.

Records are queued (``shared.audit.AuditQueue``) and sent in batches in the background, so a use
case that records a security event never waits for, nor fails with, the user service.
"""

from __future__ import annotations

import grpc

from shared.audit import AuditQueue, AuditRecord
from shared.client import ServiceCaller
from shared.proto_time import ts_from_ms
from trading.user.v1 import user_pb2, user_service_pb2, user_service_pb2_grpc

SOURCE = "order_service"


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
    """Queues the order service's security events and delivers them to the user service."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str, *, timeout: float = 5.0):
        self.stub = user_service_pb2_grpc.UserServiceStub(channel)
        self.call = ServiceCaller(service_token, what="user service (audit trail)")
        self.timeout = timeout
        self.queue = AuditQueue(self._send)

    def record(self, record: AuditRecord) -> None:
        self.queue.record(record)

    def start(self) -> None:
        """Start delivering in the background."""
        self.queue.start()

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop, delivering what is left within ``timeout`` seconds."""
        await self.queue.stop(timeout)

    async def _send(self, records: list[AuditRecord]) -> None:
        request = user_service_pb2.RecordAuditEventsRequest(events=[encode_record(r) for r in records])
        await self.call(self.stub.RecordAuditEvents, request, timeout=self.timeout)
