"""The one mapping between ``shared.errors`` and gRPC statuses, used at the API edge only.

On the server, the request-context interceptor (``shared.server``) turns a ``DomainError`` into
its status with ``to_status``: the gRPC code named by the error's ``Code``, the message, and a
``google.rpc.Status`` whose details are an ``ErrorInfo`` (reason, domain ``trading.core``,
metadata), plus a ``BadRequest`` field violation for ``InvalidArgument`` and a ``RetryInfo`` for
a ``ResourceExhausted`` that knows its ``retry_after``. Anything else becomes ``internal_status``.

On the client, ``from_rpc_error`` turns a ``grpc.RpcError`` from another service back into the same
exception (``shared.client`` and the client adapters use it), so use cases never see transport types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from shared.errors import (
    Aborted,
    AlreadyExists,
    Code,
    DeadlineExceeded,
    DomainError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

DOMAIN = "trading.core"
"""The ``ErrorInfo.domain`` of every error the services report."""

_STATUS_CODE: Mapping[Code, grpc.StatusCode] = {code: grpc.StatusCode[code.name] for code in Code}

# The exception a status from another service comes back as; a code not listed becomes Unavailable.
_BY_STATUS_CODE: Mapping[grpc.StatusCode, type[DomainError]] = {
    _STATUS_CODE[cls.code]: cls
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


def status_code(error: DomainError) -> grpc.StatusCode:
    """The gRPC status code a domain error is reported with."""
    return _STATUS_CODE[error.code]


def _details(error: DomainError) -> list[Any]:
    """The google.rpc detail messages of ``error``: its ErrorInfo, then what its kind adds."""
    details: list[Any] = [error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)]
    if isinstance(error, InvalidArgument):
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.description)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    elif isinstance(error, ResourceExhausted) and error.retry_after is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(0, int(error.retry_after * 1e9)))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
    return details


def to_status(error: DomainError) -> grpc.Status:
    """Build the rich gRPC status (google.rpc.Status with ErrorInfo) for a domain error."""
    status = status_pb2.Status(code=status_code(error).value[0], message=error.message)
    for detail in _details(error):
        status.details.add().Pack(detail)
    return cast(grpc.Status, rpc_status.to_status(status))  # grpc_status is untyped


def internal_status() -> grpc.Status:
    """The status of an unexpected failure: generic message, no details from inside."""
    status = status_pb2.Status(code=code_pb2.INTERNAL, message="internal error; see the service log")
    return cast(grpc.Status, rpc_status.to_status(status))  # grpc_status is untyped


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
    # (key, value) pairs at run time, whatever grpc's stubs say the entries are.
    trailing: Iterable[Any] = error.trailing_metadata() if hasattr(error, "trailing_metadata") else ()
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
    cls = _BY_STATUS_CODE.get(code, Unavailable)
    return cls(message, reason=reason, metadata=metadata)
