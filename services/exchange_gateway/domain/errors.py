"""What can go wrong talking to the exchange, in the terms the use cases decide on.

    ExchangeError                    (outcome: RETRYABLE | DEFINITE | UNKNOWN)
    ├── outcome DEFINITE   the exchange refused; nothing happened (filters, balance, -2011, -2013 ...)
    ├── outcome RETRYABLE  not executed, and the same request may be sent again (-1021, -1008 with
    │                      a 4xx, 429/418 after the pause, could not connect)
    └── outcome UNKNOWN    it may or may not have happened (timeout, any 5xx, -1000, -1001, -1006, -1007):
                           resolve by querying, never by sending again

``reason`` says which case it is, so that use cases need not know Binance's codes.
"""

from __future__ import annotations

from enum import StrEnum


class ExchangeOutcome(StrEnum):
    """Whether a failed request to the exchange may have taken effect (the tree above)."""

    RETRYABLE = "RETRYABLE"
    DEFINITE = "DEFINITE"
    UNKNOWN = "UNKNOWN"


class Failure(StrEnum):
    """Why a request failed, independent of the venue's codes."""

    REJECTED = "REJECTED"  # refused (filters, balance, parameters, permissions...)
    NO_SUCH_ORDER = "NO_SUCH_ORDER"  # query: the exchange has no such order
    CANCEL_REJECTED = "CANCEL_REJECTED"  # cancel: the order is not open (unknown, filled, canceled)
    DUPLICATE_ORDER = "DUPLICATE_ORDER"  # new order: an open order already has this client order id
    RATE_LIMITED = "RATE_LIMITED"  # 429 / 418 / too many orders
    INVALID_TIMESTAMP = "INVALID_TIMESTAMP"  # -1021 (resynced and retried inside the adapter)
    BUSY = "BUSY"  # exchange overloaded, not executed
    UNREACHABLE = "UNREACHABLE"  # could not connect: not sent
    AUTH = "AUTH"  # bad key, signature or permissions
    UNKNOWN = "UNKNOWN"  # timeout, 5xx, -1006, -1007: outcome unknown


class ExchangeError(Exception):
    """A request to the exchange failed; ``outcome`` says whether it may have taken effect."""

    def __init__(
        self,
        message: str,
        *,
        outcome: ExchangeOutcome,
        failure: Failure,
        code: int | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.outcome = outcome
        self.failure = failure
        self.code = code
        self.http_status = http_status
        self.retry_after = retry_after

    def describe(self) -> str:
        """Short text for reject reasons: the code and the exchange's message."""
        if self.code is not None:
            return f"{self.code}: {self.message}"
        return self.message
