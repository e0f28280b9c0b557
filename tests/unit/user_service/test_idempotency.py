"""Idempotency keys: same content replays, other content conflicts; stored results round-trip exactly."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.user_service.domain.commands import Deposit, Release, Reserve, Settle, Withdraw
from services.user_service.domain.model import Balance, Reservation
from services.user_service.domain.results import (
    FundsResult,
    IdempotencyConflict,
    ReleaseResult,
    ReserveResult,
    SettleResult,
    check_replay,
    decode,
    encode,
)

U = "usr_01J9Z3ABCDEFGHJKMNPQRSTVWX"
V = "usr_01J9Z3ABCDEFGHJKMNPQRSTVWY"


def test_equal_amounts_in_different_notation_are_the_same_content() -> None:
    assert Deposit.parse(U, "BTC", "0.1", "r").fingerprint() == Deposit.parse(U, "BTC", "0.10000000", "r").fingerprint()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (Deposit.parse(U, "BTC", "1", "r"), Deposit.parse(U, "BTC", "2", "r")),
        (Deposit.parse(U, "BTC", "1", "r"), Deposit.parse(V, "BTC", "1", "r")),
        (Deposit.parse(U, "BTC", "1", "r"), Deposit.parse(U, "ETH", "1", "r")),
        (Deposit.parse(U, "BTC", "1", "r"), Withdraw.parse(U, "BTC", "1", "r")),
        (Reserve.parse("o", U, "BTC", "1"), Reserve.parse("o", U, "BTC", "1.5")),
        (Release.parse("o", "x", ""), Release.parse("o", "x", "1")),
        (Release.parse("o", "x", "1"), Release.parse("p", "x", "1")),
    ],
)
def test_same_key_with_other_content_conflicts(first, second) -> None:
    assert first.scope == second.scope and first.key == second.key
    check_replay(first.scope, first.key, first.fingerprint(), first.fingerprint())
    with pytest.raises(IdempotencyConflict) as caught:
        check_replay(first.scope, first.key, first.fingerprint(), second.fingerprint())
    assert caught.value.code.name == "ABORTED"
    assert caught.value.reason == "IDEMPOTENCY_KEY_REUSED"


def test_deposits_and_withdrawals_share_one_key_space_but_orders_and_trades_do_not() -> None:
    assert Deposit.scope == Withdraw.scope
    assert len({Deposit.scope, Reserve.scope, Release.scope, Settle.scope}) == 4


def test_settle_fingerprint_covers_money_but_not_the_trade_time() -> None:
    base = {
        "trade_id": "T:1",
        "order_id": "o",
        "user_id": U,
        "debit_asset": "USDT",
        "debit_amount": "10",
        "credit_asset": "BTC",
        "credit_amount": "0.1",
        "fee_asset": "BTC",
        "fee_amount": "0.0001",
    }
    first = Settle.parse(**base, trade_ms=1)
    assert first.fingerprint() == Settle.parse(**base, trade_ms=2).fingerprint()
    for field, other in [
        ("debit_amount", "10.1"),
        ("credit_amount", "0.2"),
        ("fee_amount", "0.0002"),
        ("order_id", "p"),
    ]:
        assert first.fingerprint() != Settle.parse(**{**base, field: other}).fingerprint(), field


@pytest.mark.parametrize(
    "result",
    [
        FundsResult(Balance(U, "BTC", Decimal("0.5"), Decimal("99999999999999999999.99999999"))),
        ReserveResult(Balance(U, "USDT", Decimal(1), Decimal(2)), Reservation("o", U, "USDT", Decimal(2))),
        ReleaseResult(Decimal("0.00000001"), Reservation("o", U, "USDT", Decimal(2), Decimal(1), Decimal("0.5"))),
        ReleaseResult(Decimal(0), None),
        SettleResult(
            (Balance(U, "BTC", Decimal("0.001")), Balance(U, "USDT", Decimal(1), Decimal(2))),
            Reservation("o", U, "USDT", Decimal(60), Decimal(50)),
        ),
    ],
)
def test_stored_results_round_trip_exactly(result) -> None:
    assert decode(encode(result)) == result
