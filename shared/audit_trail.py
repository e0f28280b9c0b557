"""The user service's audit trail as a client sees it: RecordAuditEvents with the service token.

The order service and the gateway both record their security events there. Records are queued
(``shared.audit.AuditQueue``) and sent in batches in the background, so a caller that records an
event never waits for, nor fails with, the user service. Each event names the service that saw it
(``source``).
"""

from __future__ import annotations

import grpc

from shared.audit import AuditQueue, AuditRecord
from shared.client import ServiceCaller
from shared.proto_time import ts_from_ms
from trading.user.v1 import user_pb2, user_service_pb2, user_service_pb2_grpc


def encode_record(record: AuditRecord, source: str) -> user_pb2.AuditEvent:
    """One record as RecordAuditEvents takes it."""
    return user_pb2.AuditEvent(
        kind=user_pb2.AuditEventKind.Value(f"AUDIT_EVENT_KIND_{record.kind}"),  # the enum value by its name
        event_time=ts_from_ms(record.event_ms),
        source=source,
        actor=record.actor,
        actor_key_id=record.actor_key_id,
        user_id=record.user_id,
        key_id=record.key_id,
        peer=record.peer,
        rpc=record.rpc,
        details=dict(record.details),
        source_event_id=record.record_id,
    )


class AuditTrailClient:
    """Queues one service's security events and delivers them to the user service."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str, *, source: str, timeout: float = 5.0):
        self.stub = user_service_pb2_grpc.UserServiceStub(channel)
        self.call = ServiceCaller(service_token, what="user service (audit trail)")
        self.source = source
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
        events = [encode_record(r, self.source) for r in records]
        request = user_service_pb2.RecordAuditEventsRequest(events=events)
        await self.call(self.stub.RecordAuditEvents, request, timeout=self.timeout)
