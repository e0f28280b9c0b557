"""Domain errors: the one exception tree every service raises, in plain Python.

Exception tree (every service raises these; nothing else reaches a client):

    DomainError
    ├── InvalidArgument      INVALID_ARGUMENT   bad input; names the field and what is wrong with it
    ├── NotFound             NOT_FOUND
    ├── AlreadyExists        ALREADY_EXISTS
    ├── FailedPrecondition   FAILED_PRECONDITION  state forbids it (insufficient funds, not ACTIVE...)
    ├── Aborted              ABORTED            conflict, e.g. an idempotency key reused with other content
    ├── OutOfRange           OUT_OF_RANGE       a position past what is kept, e.g. a stream resumed too late
    ├── ResourceExhausted    RESOURCE_EXHAUSTED rate limits; carries retry_after
    ├── Unavailable          UNAVAILABLE        a dependency is down, or an outcome is unknown
    ├── DeadlineExceeded     DEADLINE_EXCEEDED
    ├── Unauthenticated      UNAUTHENTICATED
    ├── PermissionDenied     PERMISSION_DENIED
    └── Internal             INTERNAL           generic message only; details go to the log

Each class carries a ``Code``, a plain name for the kind of failure, plus a ``reason`` and
``metadata`` for the caller. This module knows no transport, so domain code can raise these
errors and stay pure; ``shared.grpc_errors`` is the one place that maps them to gRPC statuses
(with ``google.rpc`` details) on the server and back into these exceptions on the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import ClassVar


class Code(StrEnum):
    """The kind of a failure; each name is the gRPC status name it is reported as."""

    UNKNOWN = "UNKNOWN"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    ABORTED = "ABORTED"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INTERNAL = "INTERNAL"


class DomainError(Exception):
    """Base of all errors a service reports to its clients."""

    code: ClassVar[Code] = Code.UNKNOWN
    default_reason: ClassVar[str] = "ERROR"

    def __init__(self, message: str, *, reason: str | None = None, metadata: Mapping[str, str] | None = None):
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata: dict[str, str] = dict(metadata or {})


class InvalidArgument(DomainError):
    """Bad input: ``field`` names it and ``description`` says what is wrong (a field violation on the wire)."""

    code = Code.INVALID_ARGUMENT
    default_reason = "INVALID_ARGUMENT"

    def __init__(self, field: str, description: str, *, reason: str | None = None):
        super().__init__(f"{field}: {description}", reason=reason, metadata={"field": field})
        self.field = field
        self.description = description


class NotFound(DomainError):
    code = Code.NOT_FOUND
    default_reason = "NOT_FOUND"


class AlreadyExists(DomainError):
    code = Code.ALREADY_EXISTS
    default_reason = "ALREADY_EXISTS"


class FailedPrecondition(DomainError):
    code = Code.FAILED_PRECONDITION
    default_reason = "FAILED_PRECONDITION"


class Aborted(DomainError):
    code = Code.ABORTED
    default_reason = "ABORTED"


class OutOfRange(DomainError):
    code = Code.OUT_OF_RANGE
    default_reason = "OUT_OF_RANGE"


class ResourceExhausted(DomainError):
    """A rate limit; ``retry_after`` (seconds), when known, says when to try again."""

    code = Code.RESOURCE_EXHAUSTED
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


class Unavailable(DomainError):
    code = Code.UNAVAILABLE
    default_reason = "UNAVAILABLE"


class DeadlineExceeded(DomainError):
    code = Code.DEADLINE_EXCEEDED
    default_reason = "DEADLINE_EXCEEDED"


class Unauthenticated(DomainError):
    code = Code.UNAUTHENTICATED
    default_reason = "UNAUTHENTICATED"


class PermissionDenied(DomainError):
    code = Code.PERMISSION_DENIED
    default_reason = "PERMISSION_DENIED"


class Internal(DomainError):
    code = Code.INTERNAL
    default_reason = "INTERNAL"


OUTCOME_UNKNOWN: tuple[type[DomainError], ...] = (Unavailable, DeadlineExceeded, Internal)
"""The errors of a call to another service after which it may or may not have acted: the caller resolves
the outcome (by retrying with the same key, or by asking) instead of treating the call as refused."""
