"""Binance errors as data: which codes and HTTP statuses are retryable, definite or outcome unknown.

Sources: the Binance Spot API documentation, errors.md and rest-api.md "HTTP Return Codes".
A 5xx "does NOT mean failure: the execution status is UNKNOWN"; -1006 and -1007 say so too.
Unlike nautilus_trader's Python adapter (which gives up on -1007 and reports a rejection),
an unknown outcome is never turned into a rejection here: the use case resolves it by query.
"""

from __future__ import annotations

import re

from services.exchange_gateway.domain.errors import ExchangeError, ExchangeOutcome, Failure

# Codes whose outcome is unknown: the request may have reached the matching engine. -1001
# ("Internal error; unable to process your request") is not documented as "not executed", so it
# counts as unknown too (nautilus_trader retries it; for a new order that risks a duplicate).
UNKNOWN_CODES = frozenset({-1000, -1001, -1006, -1007})
# Codes that mean "not executed, may be sent again" (after a resync, a pause or a moment), when
# they come with a 4xx. Any 5xx is unknown whatever its code: "the execution status is UNKNOWN
# and could have been a success" (rest-api.md, HTTP return codes).
RETRYABLE_CODES = frozenset({-1003, -1008, -1015, -1021})
# Everything else a 4xx JSON error carries is a definite refusal; a few get their own meaning.
FAILURE_BY_CODE = {
    -1000: Failure.UNKNOWN,
    -1001: Failure.UNKNOWN,
    -1003: Failure.RATE_LIMITED,
    -1006: Failure.UNKNOWN,
    -1007: Failure.UNKNOWN,
    -1008: Failure.BUSY,
    -1015: Failure.RATE_LIMITED,
    -1021: Failure.INVALID_TIMESTAMP,
    -1022: Failure.AUTH,
    -2011: Failure.CANCEL_REJECTED,
    -2013: Failure.NO_SUCH_ORDER,
    -2014: Failure.AUTH,
    -2015: Failure.AUTH,
    -2026: Failure.NO_SUCH_ORDER,
}
DUPLICATE_ORDER_MESSAGE = "Duplicate order sent."
_BANNED_UNTIL = re.compile(r"banned until (\d{10,16})")


def classify(http_status: int | None, code: int | None) -> ExchangeOutcome:
    """Classify a failed answer: RETRYABLE, DEFINITE or UNKNOWN."""
    if code in UNKNOWN_CODES or (http_status is not None and http_status >= 500):
        return ExchangeOutcome.UNKNOWN
    if http_status in (429, 418) or code in RETRYABLE_CODES:
        return ExchangeOutcome.RETRYABLE
    if code is None and (http_status is None or http_status < 400):
        return ExchangeOutcome.UNKNOWN  # an answer we cannot read: assume it may have worked
    return ExchangeOutcome.DEFINITE


class BinanceApiError(ExchangeError):
    """An error answer from Binance: HTTP status, Binance code and message, classified."""

    def __init__(self, http_status: int | None, code: int | None, message: str, *, retry_after: float | None = None):
        outcome = classify(http_status, code)
        if code is not None and code in FAILURE_BY_CODE:
            failure = FAILURE_BY_CODE[code]
        elif http_status in (429, 418):
            failure = Failure.RATE_LIMITED
        elif outcome is ExchangeOutcome.UNKNOWN:
            failure = Failure.UNKNOWN
        elif http_status in (401,) or code in (-2014, -2015):
            failure = Failure.AUTH
        else:
            failure = Failure.REJECTED
        if code == -2010 and message.strip() == DUPLICATE_ORDER_MESSAGE:
            failure = Failure.DUPLICATE_ORDER
        super().__init__(
            message or f"HTTP {http_status}",
            outcome=outcome,
            failure=failure,
            code=code,
            http_status=http_status,
            retry_after=retry_after,
        )

    def __repr__(self) -> str:
        return f"BinanceApiError(http={self.http_status}, code={self.code}, msg={self.message!r}, {self.outcome})"


def transport_error(message: str, *, sent: bool) -> ExchangeError:
    """A failure below HTTP: not sent (could not connect) is retryable, anything later is unknown."""
    if not sent:
        return ExchangeError(message, outcome=ExchangeOutcome.RETRYABLE, failure=Failure.UNREACHABLE)
    return ExchangeError(message, outcome=ExchangeOutcome.UNKNOWN, failure=Failure.UNKNOWN)


def banned_until_ms(message: str) -> int | None:
    """The epoch-ms end of an IP ban from a -1003 message ("... IP banned until 1659146400000."), if any."""
    match = _BANNED_UNTIL.search(message or "")
    return int(match.group(1)) if match else None
