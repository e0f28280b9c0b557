"""Ledger arithmetic: balances, entries and reservations after each operation, and refusals."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.user_service.domain import ledger
from services.user_service.domain.commands import Deposit, Release, Reserve, Settle, Withdraw
from services.user_service.domain.model import (
    Balance,
    BalanceLimitExceeded,
    EntryKind,
    HouseAccount,
    HouseBalance,
    HouseEntryKind,
    InsufficientFunds,
    Reservation,
    User,
    UserStatus,
)
from shared.errors import InvalidArgument

D = Decimal
U = "usr_01J9Z3ABCDEFGHJKMNPQRSTVWX"
NOW = 1_700_000_000_000


def user(status: UserStatus = UserStatus.ACTIVE) -> User:
    return User(U, "ann", "ann@example.com", status, NOW, NOW)


def settle_cmd(**over: str) -> Settle:
    fields = {
        "trade_id": "BTCUSDT:1",
        "order_id": "ord-1",
        "user_id": U,
        "debit_asset": "USDT",
        "debit_amount": "50",
        "credit_asset": "BTC",
        "credit_amount": "0.001",
        "fee_asset": "",
        "fee_amount": "",
    }
    fields.update(over)
    return Settle.parse(**fields)


def settle(reservation: Reservation | None, balances: dict[str, Balance], command: Settle) -> ledger.LedgerChange:
    """ledger.settle with the house balances the trade touches, all zero."""
    house = {key: HouseBalance(*key) for key in ledger.house_keys(command)}
    return ledger.settle(reservation, balances, house, command, NOW)


def sums(entries: list) -> tuple[Decimal, Decimal]:
    return sum((e.available_delta for e in entries), D(0)), sum((e.locked_delta for e in entries), D(0))


def test_point_one_three_times_plus_point_two_is_exactly_half() -> None:
    balance = Balance(U, "USDT")
    for i, amount in enumerate(["0.1", "0.1", "0.1", "0.2"]):
        balance = ledger.deposit(balance, Deposit.parse(U, "USDT", amount, f"r{i}"), NOW).balances["USDT"]
    assert balance.available == D("0.5")
    assert str(balance.available.quantize(D("1E-8"))) == "0.50000000"


def test_deposit_records_one_entry_naming_the_request() -> None:
    change = ledger.deposit(Balance(U, "BTC", D(1)), Deposit.parse(U, "BTC", "2.5", "req-7"), NOW)
    [entry] = change.entries
    assert (entry.kind, entry.available_delta, entry.locked_delta) == (EntryKind.DEPOSIT, D("2.5"), D(0))
    assert (entry.available_after, entry.locked_after, entry.reference) == (D("3.5"), D(0), "req-7")


def test_withdraw_more_than_available_is_refused() -> None:
    with pytest.raises(InsufficientFunds) as caught:
        ledger.withdraw(Balance(U, "BTC", D(1), D(5)), Withdraw.parse(U, "BTC", "1.00000001", "w"), NOW)
    assert caught.value.reason == "INSUFFICIENT_FUNDS"
    assert caught.value.code.name == "FAILED_PRECONDITION"


def test_withdraw_everything_available_leaves_zero_and_keeps_locked() -> None:
    change = ledger.withdraw(Balance(U, "BTC", D(1), D(5)), Withdraw.parse(U, "BTC", "1", "w"), NOW)
    assert change.balances["BTC"] == Balance(U, "BTC", D(0), D(5))


def test_reserve_moves_available_to_locked_and_opens_a_reservation() -> None:
    change = ledger.reserve(user(), Balance(U, "USDT", D(100)), Reserve.parse("o1", U, "USDT", "30"), NOW)
    assert change.balances["USDT"] == Balance(U, "USDT", D(70), D(30))
    assert change.reservation == Reservation("o1", U, "USDT", D(30))
    assert sums(change.entries) == (D(-30), D(30))
    assert change.entries[0].kind is EntryKind.RESERVE
    assert change.entries[0].reference == "o1"


def test_reserve_more_than_available_is_refused() -> None:
    with pytest.raises(InsufficientFunds):
        ledger.reserve(user(), Balance(U, "USDT", D(10), D(90)), Reserve.parse("o1", U, "USDT", "11"), NOW)


@pytest.mark.parametrize("status", [UserStatus.INACTIVE, UserStatus.SUSPENDED])
def test_only_active_users_may_reserve(status: UserStatus) -> None:
    with pytest.raises(ledger.UserNotActive) as caught:
        ledger.reserve(user(status), Balance(U, "USDT", D(100)), Reserve.parse("o1", U, "USDT", "1"), NOW)
    assert caught.value.code.name == "FAILED_PRECONDITION"


def test_release_everything_remaining() -> None:
    reservation = Reservation("o1", U, "USDT", D(30), consumed=D(10), released=D(5))
    amount, change = ledger.release(reservation, Balance(U, "USDT", D(70), D(15)), Release.parse("o1", "r", ""), NOW)
    assert amount == D(15)
    assert change.balances["USDT"] == Balance(U, "USDT", D(85), D(0))
    assert change.reservation is not None
    assert change.reservation.remaining == 0
    assert change.reservation.released == D(20)


def test_release_part_then_more_than_remains_releases_only_the_rest() -> None:
    reservation = Reservation("o1", U, "USDT", D(30))
    balance = Balance(U, "USDT", D(0), D(30))
    amount, change = ledger.release(reservation, balance, Release.parse("o1", "r1", "10"), NOW)
    assert amount == D(10)
    assert change.reservation is not None
    amount, change = ledger.release(change.reservation, change.balances["USDT"], Release.parse("o1", "r2", "50"), NOW)
    assert amount == D(20)
    assert change.balances["USDT"] == Balance(U, "USDT", D(30), D(0))


def test_release_of_an_exhausted_reservation_releases_zero_and_writes_no_entry() -> None:
    reservation = Reservation("o1", U, "USDT", D(30), consumed=D(30))
    amount, change = ledger.release(reservation, Balance(U, "USDT", D(5)), Release.parse("o1", "r", ""), NOW)
    assert amount == 0
    assert change.entries == []


def test_settle_buy_with_fee_in_the_credit_asset() -> None:
    reservation = Reservation("ord-1", U, "USDT", D(60))
    balances = {"USDT": Balance(U, "USDT", D(40), D(60)), "BTC": Balance(U, "BTC")}
    change = settle(reservation, balances, settle_cmd(fee_asset="BTC", fee_amount="0.000001"))
    assert change.balances["USDT"] == Balance(U, "USDT", D(40), D(10))
    assert change.balances["BTC"] == Balance(U, "BTC", D("0.000999"), D(0))
    assert change.reservation == Reservation("ord-1", U, "USDT", D(60), consumed=D(50))
    kinds = [(e.asset, e.kind) for e in change.entries]
    assert kinds == [("USDT", EntryKind.TRADE_DEBIT), ("BTC", EntryKind.TRADE_CREDIT), ("BTC", EntryKind.FEE)]
    assert all(e.reference == "BTCUSDT:1" and e.order_id == "ord-1" for e in change.entries)


def test_settle_with_fee_in_the_debit_asset_takes_it_from_the_reservation_first() -> None:
    reservation = Reservation("ord-1", U, "USDT", D("50.03"))
    balances = {"USDT": Balance(U, "USDT", D(10), D("50.03")), "BTC": Balance(U, "BTC")}
    change = settle(reservation, balances, settle_cmd(fee_asset="USDT", fee_amount="0.05"))
    # 50 debit + 0.03 of the fee from the reservation, the other 0.02 of the fee from available.
    assert change.balances["USDT"] == Balance(U, "USDT", D("9.98"), D(0))
    assert change.reservation is not None
    assert change.reservation.consumed == D("50.03")
    assert change.reservation.remaining == 0
    fee = change.entries[-1]
    assert (fee.kind, fee.available_delta, fee.locked_delta) == (EntryKind.FEE, D("-0.02"), D("-0.03"))


def test_settle_beyond_the_reservation_takes_the_rest_from_available() -> None:
    reservation = Reservation("ord-1", U, "USDT", D(45))
    balances = {"USDT": Balance(U, "USDT", D(10), D(45)), "BTC": Balance(U, "BTC")}
    change = settle(reservation, balances, settle_cmd())
    assert change.balances["USDT"] == Balance(U, "USDT", D(5), D(0))
    debit = change.entries[0]
    assert (debit.available_delta, debit.locked_delta) == (D(-5), D(-45))


def test_settle_that_available_cannot_cover_is_refused() -> None:
    reservation = Reservation("ord-1", U, "USDT", D(45))
    balances = {"USDT": Balance(U, "USDT", D(4), D(45)), "BTC": Balance(U, "BTC")}
    with pytest.raises(InsufficientFunds):
        settle(reservation, balances, settle_cmd())


@pytest.mark.parametrize(
    ("reservation", "reason"),
    [
        (None, "no reservation"),
        (Reservation("ord-1", "usr_01J9Z3ABCDEFGHJKMNPQRSTVWY", "USDT", D(60)), "another user"),
        (Reservation("ord-1", U, "BTC", D(60)), "reserved BTC"),
    ],
)
def test_settle_against_a_wrong_reservation_is_refused(reservation: Reservation | None, reason: str) -> None:
    balances = {"USDT": Balance(U, "USDT", D(100)), "BTC": Balance(U, "BTC")}
    with pytest.raises(ledger.ReservationMismatch, match=reason) as caught:
        settle(reservation, balances, settle_cmd())
    assert caught.value.code.name == "FAILED_PRECONDITION"


def test_settle_command_rejects_a_fee_in_a_third_asset_and_equal_assets() -> None:
    with pytest.raises(InvalidArgument) as caught:
        settle_cmd(fee_asset="BNB", fee_amount="0.01")
    assert caught.value.field == "fee_asset"
    with pytest.raises(InvalidArgument) as caught:
        settle_cmd(credit_asset="USDT")
    assert caught.value.field == "credit_asset"
    # A zero fee ignores its asset.
    assert settle_cmd(fee_asset="BNB", fee_amount="0").fee_asset == ""


def test_entries_explain_the_change_exactly() -> None:
    reservation = Reservation("ord-1", U, "USDT", D(60))
    before = {"USDT": Balance(U, "USDT", D(40), D(60)), "BTC": Balance(U, "BTC", D(1))}
    change = settle(reservation, before, settle_cmd(fee_asset="USDT", fee_amount="0.1"))
    for asset, after in change.balances.items():
        entries = [e for e in change.entries if e.asset == asset]
        avail, locked = sums(entries)
        assert after.available == before[asset].available + avail
        assert after.locked == before[asset].locked + locked
        assert (entries[-1].available_after, entries[-1].locked_after) == (after.available, after.locked)


def test_balances_cannot_exceed_twenty_integer_digits() -> None:
    balance = Balance(U, "BTC", D("99999999999999999999"))
    with pytest.raises(BalanceLimitExceeded):
        ledger.deposit(balance, Deposit.parse(U, "BTC", "1", "r"), NOW)


# --- the house side: fee income and exchange fees ----------------------------------------------


def test_the_users_fee_moves_to_fee_income_in_the_same_asset() -> None:
    reservation = Reservation("ord-1", U, "USDT", D(60))
    balances = {"USDT": Balance(U, "USDT", D(40), D(60)), "BTC": Balance(U, "BTC")}
    change = settle(reservation, balances, settle_cmd(fee_asset="BTC", fee_amount="0.000001"))
    assert change.house_balances == {
        (HouseAccount.FEE_INCOME, "BTC"): HouseBalance(HouseAccount.FEE_INCOME, "BTC", D("0.000001"))
    }
    [entry] = change.house_entries
    assert (entry.account, entry.asset, entry.kind) == (HouseAccount.FEE_INCOME, "BTC", HouseEntryKind.TRADE_FEE)
    assert (entry.amount, entry.balance_after) == (D("0.000001"), D("0.000001"))
    assert (entry.reference, entry.order_id, entry.create_ms) == ("BTCUSDT:1", "ord-1", NOW)
    user_fee = [e for e in change.entries if e.kind is EntryKind.FEE]
    assert sum((e.available_delta + e.locked_delta for e in user_fee), D(0)) == -entry.amount


def test_an_exchange_fee_in_bnbis_the_houses_cost_and_leaves_the_user_alone() -> None:
    reservation = Reservation("ord-1", U, "USDT", D(60))
    balances = {"USDT": Balance(U, "USDT", D(40), D(60)), "BTC": Balance(U, "BTC")}
    command = settle_cmd(fee_asset="BTC", fee_amount="0.000001", exchange_fee_asset="BNB", exchange_fee_amount="0.0002")
    change = settle(reservation, balances, command)
    assert set(change.balances) == {"USDT", "BTC"}, "the user has no BNB and needs none"
    assert change.balances["BTC"] == Balance(U, "BTC", D("0.000999"), D(0))
    assert change.house_balances[(HouseAccount.EXCHANGE_FEES, "BNB")].balance == D("-0.0002")
    kinds = [(e.account, e.asset, e.kind, e.amount) for e in change.house_entries]
    assert kinds == [
        (HouseAccount.FEE_INCOME, "BTC", HouseEntryKind.TRADE_FEE, D("0.000001")),
        (HouseAccount.EXCHANGE_FEES, "BNB", HouseEntryKind.EXCHANGE_FEE, D("-0.0002")),
    ]
    assert all(e.reference == "BTCUSDT:1" and e.order_id == "ord-1" for e in change.house_entries)


def test_house_balances_accumulate_and_each_entry_says_the_balance_after() -> None:
    reservation = Reservation("ord-1", U, "USDT", D(60))
    balances = {"USDT": Balance(U, "USDT", D(40), D(60)), "BTC": Balance(U, "BTC")}
    command = settle_cmd(exchange_fee_asset="USDT", exchange_fee_amount="0.05")
    key = (HouseAccount.EXCHANGE_FEES, "USDT")
    change = ledger.settle(reservation, balances, {key: HouseBalance(*key, D("-1.25"))}, command, NOW)
    [entry] = change.house_entries
    assert (entry.amount, entry.balance_after) == (D("-0.05"), D("-1.30"))
    assert change.house_balances[key].balance == D("-1.30")


def test_a_trade_without_fees_touches_no_house_account() -> None:
    reservation = Reservation("ord-1", U, "USDT", D(60))
    balances = {"USDT": Balance(U, "USDT", D(40), D(60)), "BTC": Balance(U, "BTC")}
    command = settle_cmd(fee_asset="BTC", fee_amount="0", exchange_fee_asset="BNB", exchange_fee_amount="0")
    assert ledger.house_keys(command) == []
    change = settle(reservation, balances, command)
    assert change.house_entries == [] and change.house_balances == {}


def test_a_house_balance_cannot_leave_twenty_integer_digits() -> None:
    balance = HouseBalance(HouseAccount.EXCHANGE_FEES, "BNB", D("-99999999999999999999"))
    with pytest.raises(BalanceLimitExceeded):
        balance.moved(D(-1))


def test_totals_sum_users_and_house_per_asset_exactly() -> None:
    users = [
        Balance(U, "BTC", D("0.1"), D("0.2")),
        Balance("usr_01J9Z3ABCDEFGHJKMNPQRSTVWY", "BTC", D("0.1"), D(0)),
        Balance(U, "USDT", D(5), D(0)),
    ]
    house = [
        HouseBalance(HouseAccount.FEE_INCOME, "BTC", D("0.001")),
        HouseBalance(HouseAccount.EXCHANGE_FEES, "BTC", D("-0.0005")),
        HouseBalance(HouseAccount.EXCHANGE_FEES, "BNB", D("-0.02")),
    ]
    totals = ledger.totals(users, house)
    assert [t.asset for t in totals] == ["BNB", "BTC", "USDT"]
    bnb, btc, usdt = totals
    assert (btc.users_available, btc.users_locked, btc.users_total) == (D("0.2"), D("0.2"), D("0.4"))
    assert btc.house_total == D("0.0005")
    assert [h.account for h in btc.house] == [HouseAccount.EXCHANGE_FEES, HouseAccount.FEE_INCOME]
    assert (bnb.users_total, bnb.house_total) == (D(0), D("-0.02"))
    assert (usdt.users_total, usdt.house_total, usdt.house) == (D(5), D(0), ())


def test_exchange_fee_input_rules_name_their_fields() -> None:
    cases = [
        ({"exchange_fee_asset": "BNB", "exchange_fee_amount": "-0.1"}, "exchange_fee_amount"),
        ({"exchange_fee_asset": "BNB", "exchange_fee_amount": "abc"}, "exchange_fee_amount"),
        ({"exchange_fee_asset": "BNB", "exchange_fee_amount": "1e-3"}, "exchange_fee_amount"),
        ({"exchange_fee_asset": "BNB", "exchange_fee_amount": "0.000000001"}, "exchange_fee_amount"),
        ({"exchange_fee_asset": "", "exchange_fee_amount": "0.1"}, "exchange_fee_asset"),
        ({"exchange_fee_asset": "bnb", "exchange_fee_amount": "0.1"}, "exchange_fee_asset"),
        ({"exchange_fee_asset": "b", "exchange_fee_amount": ""}, "exchange_fee_asset"),
    ]
    for over, field in cases:
        with pytest.raises(InvalidArgument) as caught:
            settle_cmd(**over)
        assert caught.value.field == field, over
    # Any asset is accepted for the exchange fee, a third one included.
    assert settle_cmd(exchange_fee_asset="BNB", exchange_fee_amount="0.1").exchange_fee_asset == "BNB"


def test_the_exchange_fee_is_part_of_the_fingerprint_only_when_there_is_one() -> None:
    plain = settle_cmd(fee_asset="BTC", fee_amount="0.000001")
    # Exactly what a trade without an exchange fee always had, so its retries still match.
    assert plain.fingerprint() == f"settle|ord-1|{U}|USDT|50.00000000|BTC|0.00100000|BTC|0.00000100"
    zero = settle_cmd(fee_asset="BTC", fee_amount="0.000001", exchange_fee_asset="BNB", exchange_fee_amount="0")
    assert zero.fingerprint() == plain.fingerprint()
    bnb = settle_cmd(fee_asset="BTC", fee_amount="0.000001", exchange_fee_asset="BNB", exchange_fee_amount="0.1")
    more = settle_cmd(fee_asset="BTC", fee_amount="0.000001", exchange_fee_asset="BNB", exchange_fee_amount="0.2")
    usdt = settle_cmd(fee_asset="BTC", fee_amount="0.000001", exchange_fee_asset="USDT", exchange_fee_amount="0.1")
    assert len({plain.fingerprint(), bnb.fingerprint(), more.fingerprint(), usdt.fingerprint()}) == 4
    assert (
        bnb.fingerprint()
        == settle_cmd(
            fee_asset="BTC", fee_amount="0.000001", exchange_fee_asset="BNB", exchange_fee_amount="0.10000000"
        ).fingerprint()
    )
