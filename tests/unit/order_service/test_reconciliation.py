"""The client-money reconciliation's arithmetic: in flight, the difference and its status per asset."""

from __future__ import annotations

from decimal import Decimal

from services.order_service.domain.model import ReleaseFunds, SettleTrade
from services.order_service.domain.reconciliation import (
    LedgerTotal,
    ReconciliationStatus,
    in_flight,
    overall,
    reconcile,
)

D = Decimal


def settle(debit: str, credit: str, fee: str = "0", exchange_fee: tuple[str, str] = ("", "0")) -> SettleTrade:
    return SettleTrade(
        trade_id="BTCUSDT:1",
        order_id="ord_1",
        user_id="usr_1",
        debit_asset="USDT",
        debit_amount=D(debit),
        credit_asset="BTC",
        credit_amount=D(credit),
        fee_asset="BTC",
        fee_amount=D(fee),
        trade_time_ms=1,
        exchange_fee_asset=exchange_fee[0],
        exchange_fee_amount=D(exchange_fee[1]),
    )


def test_a_trade_not_yet_booked_is_in_flight_as_the_exchange_saw_it_and_the_platform_fee_is_not() -> None:
    pending = in_flight(
        [
            settle("500", "0.01", fee="0.00001", exchange_fee=("BNB", "0.0008")),
            settle("250", "0.005"),
            ReleaseFunds(order_id="ord_1", release_id="ord_1:final"),
        ]
    )
    assert pending == {"USDT": D("-750"), "BTC": D("0.015"), "BNB": D("-0.0008")}


def test_each_asset_is_balanced_in_excess_or_short_by_the_sign_of_the_difference() -> None:
    exchange = {"USDT": (D("900"), D("100")), "BTC": (D("2"), D("0")), "BNB": (D("5"), D("0"))}
    ledger = {
        "USDT": LedgerTotal(users_available=D("1200"), users_locked=D("100"), house_total=D("0")),
        "BTC": LedgerTotal(users_available=D("1.5"), house_total=D("0.01")),
        "ETH": LedgerTotal(users_available=D("1")),
    }
    lines = {line.asset: line for line in reconcile(exchange, ledger, {"BTC": D("0.49"), "BNB": D("-1")})}

    assert lines["USDT"].exchange_total == D("1000") and lines["USDT"].users_total == D("1300")
    assert (lines["USDT"].difference, lines["USDT"].status) == (D("-300"), ReconciliationStatus.SHORTFALL)
    assert (lines["BTC"].difference, lines["BTC"].status) == (D("0"), ReconciliationStatus.BALANCED)
    assert (lines["BNB"].difference, lines["BNB"].status) == (D("6"), ReconciliationStatus.EXCESS)
    assert (lines["ETH"].difference, lines["ETH"].status) == (D("-1"), ReconciliationStatus.SHORTFALL)
    assert overall(lines.values()) is ReconciliationStatus.SHORTFALL
    assert overall([lines["BTC"], lines["BNB"]]) is ReconciliationStatus.EXCESS
    assert overall([lines["BTC"]]) is ReconciliationStatus.BALANCED
