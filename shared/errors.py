"""Domain errors and their one mapping to gRPC status codes.

Exception tree (every service raises these; nothing else reaches a client):

    DomainError
    ├── InvalidArgument      INVALID_ARGUMENT   bad input; names the field (BadRequest detail)
    ├── NotFound             NOT_FOUND
    ├── AlreadyExists        ALREADY_EXISTS
    ├── FailedPrecondition   FAILED_PRECONDITION  state forbids it (insufficient funds, not ACTIVE...)
    ├── Aborted              ABORTED            conflict, e.g. an idempotency key reused with other content
    ├── OutOfRange           OUT_OF_RANGE       a position past what is kept, e.g. a stream resumed too late
    ├── ResourceExhausted    RESOURCE_EXHAUSTED rate limits; carries retry_after (RetryInfo detail)
    ├── Unavailable          UNAVAILABLE        a dependency is down, or an outcome is unknown
    ├── DeadlineExceeded     DEADLINE_EXCEEDED
    ├── Unauthenticated      UNAUTHENTICATED
    ├── PermissionDenied     PERMISSION_DENIED
    └── Internal             INTERNAL           generic message only; details go to the log

Each status carries a ``google.rpc.Status`` with an ``ErrorInfo`` (reason, domain, metadata).
``from_rpc_error`` turns a ``grpc.RpcError`` back into the same exception on the client side,
so use cases never see transport types.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

DOMAIN = "trading.core"


class DomainError(Exception):
    """Base of all errors a service reports to its clients."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN
    default_reason: ClassVar[str] = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})

    def details(self) -> list[Any]:
        """Extra google.rpc detail messages besides ErrorInfo."""
        return []


class InvalidArgument(DomainError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *, reason: str | None = None):
        super().__init__(f"{field}: {description}", reason=reason, metadata={"field": field})
        self.field = field
        self.description = description

    def details(self) -> list[Any]:
        return [
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=self.field, description=self.description)
                ]
            )
        ]


class NotFound(DomainError):
    code = grpc.StatusCode.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = grpc.StatusCode.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = grpc.StatusCode.ABORTED
    default_reason = "ABORTED"


class OutOfRange(DomainError):
    code = grpc.StatusCode.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class ResourceExhausted(DomainError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    default_reason = "RATE_LIMITED"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ):
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_after = retry_after

    def details(self) -> list[Any]:
        if self.retry_after is None:
            return []
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, int(self.retry_after * 1e9)))
        return [error_details_pb2.RetryInfo(retry_delay=delay)]


class Unavailable(DomainError):
    code = grpc.StatusCode.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unauthenticated(DomainError):
    code = grpc.StatusCode.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = grpc.StatusCode.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Internal(DomainError):
    code = grpc.StatusCode.INTERNAL
    default_reason = "INTERNAL"


_BY_CODE: dict[grpc.StatusCode, type[DomainError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        Aborted,
        ResourceExhausted,
        Unavailable,
        DeadlineExceeded,
        Unauthenticated,
        PermissionDenied,
        Internal,
    )
}


def to_status(error: DomainError) -> grpc.Status:
    """Build the rich gRPC status (google.rpc.Status with ErrorInfo) for a domain error."""
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    for detail in [info, *error.details()]:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def internal_status() -> grpc.Status:
    """The status of an unexpected failure: generic message, no details from inside."""
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the service log")
    return rpc_status.to_status(status)


def from_rpc_error(error: grpc.RpcError, *, what: str = "") -> DomainError:
    """Turn a gRPC error from another service back into a domain error (client adapters use this)."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    message = (error.details() if hasattr(error, "details") else None) or str(code)
    if what:
        message = f"{what}: {message}"
    reason: str | None = None
    metadata: dict[str, str] = {}
    field = ""
    description = message
    retry_after: float | None = None
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for any_detail in status.details:
            if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
            elif any_detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_detail.Unpack(bad)
                if bad.field_violations:
                    field = bad.field_violations[0].field
                    description = bad.field_violations[0].description
            elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                any_detail.Unpack(retry)
                retry_after = retry.retry_delay.ToNanoseconds() / 1e9
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(field or "request", description, reason=reason)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhausted(message, retry_after=retry_after, reason=reason, metadata=metadata)
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNKNOWN):
        return Unavailable(message, reason=reason or code.name, metadata=metadata)
    cls = _BY_CODE.get(code, Unavailable)
    return cls(message, reason=reason, metadata=metadata)
