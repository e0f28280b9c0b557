"""Which Binance answers are retryable, definite or of unknown outcome."""

from __future__ import annotations

import pytest

from services.exchange_gateway.adapters.binance.errors import (
    BinanceApiError,
    banned_until_ms,
    classify,
    transport_error,
)
from services.exchange_gateway.domain.errors import ExchangeOutcome, Failure


@pytest.mark.parametrize(
    ("http_status", "code", "outcome", "failure"),
    [
        # Outcome unknown: the request may have reached the matching engine.
        (500, None, ExchangeOutcome.UNKNOWN, Failure.UNKNOWN),
        (503, -1000, ExchangeOutcome.UNKNOWN, Failure.UNKNOWN),
        (504, None, ExchangeOutcome.UNKNOWN, Failure.UNKNOWN),
        (400, -1006, ExchangeOutcome.UNKNOWN, Failure.UNKNOWN),
        (408, -1007, ExchangeOutcome.UNKNOWN, Failure.UNKNOWN),
        (503, -1007, ExchangeOutcome.UNKNOWN, Failure.UNKNOWN),
        (503, -1001, ExchangeOutcome.UNKNOWN, Failure.UNKNOWN),  # the simulator's (and Binance's) 503 body
        (400, -1001, ExchangeOutcome.UNKNOWN, Failure.UNKNOWN),
        (503, -1008, ExchangeOutcome.UNKNOWN, Failure.BUSY),  # a 5xx is unknown whatever its code
        # Not executed; the same request may go again (after a resync or a pause).
        (400, -1021, ExchangeOutcome.RETRYABLE, Failure.INVALID_TIMESTAMP),
        (400, -1008, ExchangeOutcome.RETRYABLE, Failure.BUSY),
        (429, -1003, ExchangeOutcome.RETRYABLE, Failure.RATE_LIMITED),
        (429, -1015, ExchangeOutcome.RETRYABLE, Failure.RATE_LIMITED),
        (418, -1003, ExchangeOutcome.RETRYABLE, Failure.RATE_LIMITED),
        # Definite refusals: nothing happened.
        (400, -1013, ExchangeOutcome.DEFINITE, Failure.REJECTED),
        (400, -2010, ExchangeOutcome.DEFINITE, Failure.REJECTED),
        (400, -1121, ExchangeOutcome.DEFINITE, Failure.REJECTED),
        (400, -1111, ExchangeOutcome.DEFINITE, Failure.REJECTED),
        (400, -2011, ExchangeOutcome.DEFINITE, Failure.CANCEL_REJECTED),
        (400, -2013, ExchangeOutcome.DEFINITE, Failure.NO_SUCH_ORDER),
        (401, -2015, ExchangeOutcome.DEFINITE, Failure.AUTH),
        (400, -1022, ExchangeOutcome.DEFINITE, Failure.AUTH),
        (403, None, ExchangeOutcome.DEFINITE, Failure.REJECTED),
    ],
)
def test_classification_table(http_status, code, outcome, failure):
    error = BinanceApiError(http_status, code, "message")
    assert classify(http_status, code) is outcome
    assert error.outcome is outcome
    assert error.failure is failure


def test_duplicate_client_order_id_means_the_order_exists():
    error = BinanceApiError(400, -2010, "Duplicate order sent.")
    assert error.failure is Failure.DUPLICATE_ORDER


def test_a_200_we_cannot_read_is_unknown_not_a_failure():
    assert classify(200, None) is ExchangeOutcome.UNKNOWN


def test_transport_errors_before_and_after_sending():
    assert transport_error("refused", sent=False).outcome is ExchangeOutcome.RETRYABLE
    assert transport_error("refused", sent=False).failure is Failure.UNREACHABLE
    assert transport_error("timeout", sent=True).outcome is ExchangeOutcome.UNKNOWN


def test_ban_end_is_read_from_the_message():
    assert banned_until_ms("Way too much request weight used; IP banned until 1659146400000.") == 1659146400000
    assert banned_until_ms("Too many requests") is None
