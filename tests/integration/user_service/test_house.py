"""The house accounts over gRPC: fees booked double entry, GetLedgerTotals, ListHouseEntries, upgrades.

A user pays the platform's fee in the asset received (fee_income +); what the exchange charged the
platform's account, in any asset, is the house's cost (exchange_fees -). Per asset, users' total plus
the house's total equals deposits - withdrawals + trade credits - trade debits - exchange fees.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.user_service.adapters import tables
from services.user_service.bootstrap import start
from services.user_service.domain.model import User, UserStatus
from shared.db import create_db_engine
from shared.migrations import upgrade
from tests.integration.user_service.conftest import make_config
from tests.integration.user_service.helpers import ADMIN, SERVICE, Client, db_state, error_info, rich_status
from trading.user.v1 import user_pb2
from trading.user.v1 import user_service_pb2 as pb

D = Decimal


def trade(user: str, trade_id: str, **over: Any) -> pb.SettleTradeRequest:
    """A buy of 0.01 BTC for 490 USDT on order 'ord-<user>', the platform's fee in BTC."""
    fields = {
        "trade_id": trade_id,
        "order_id": f"ord-{user}",
        "user_id": user,
        "debit_asset": "USDT",
        "debit_amount": "490",
        "credit_asset": "BTC",
        "credit_amount": "0.01",
        "fee_asset": "BTC",
        "fee_amount": "0.00001",
    }
    return pb.SettleTradeRequest(**{**fields, **over})


async def funded(client: Client, name: str, reserve: str = "500") -> str:
    user = await client.new_user(name)
    await client.deposit(user, "USDT", "1000", f"fund-{name}")
    await client.reserve(f"ord-{user}", user, "USDT", reserve)
    return user


async def house_entries(client: Client, page_size: int = 0, **filters: str) -> list[Any]:
    """Every house entry (optionally filtered), following next_page_token to the end."""
    out: list[Any] = []
    token = ""
    while True:
        response = await client.stub.ListHouseEntries(
            pb.ListHouseEntriesRequest(page_size=page_size, page_token=token, **filters), metadata=ADMIN
        )
        out.extend(response.entries)
        token = response.next_page_token
        if not token:
            return out


async def totals(client: Client, metadata: Any = ADMIN) -> dict[str, Any]:
    response = await client.stub.GetLedgerTotals(pb.GetLedgerTotalsRequest(), metadata=metadata)
    assert [t.asset for t in response.totals] == sorted(t.asset for t in response.totals)
    return {t.asset: t for t in response.totals}


async def test_a_trade_whose_exchange_fee_is_in_bnb_settles_although_the_user_has_no_bnb(client: Client) -> None:
    ann = await funded(client, "ann")
    response = await client.stub.SettleTrade(
        trade(ann, "BTCUSDT:1", exchange_fee_asset="BNB", exchange_fee_amount="0.00002"), metadata=SERVICE
    )
    assert [(b.asset, b.available, b.locked) for b in response.balances] == [
        ("BTC", "0.00999000", "0.00000000"),
        ("USDT", "500.00000000", "10.00000000"),
    ]
    assert set(await client.balances(ann)) == {"BTC", "USDT"}, "no BNB balance appears for the user"
    await client.assert_ledger_explains_balances(ann)
    by_asset = await totals(client)
    assert by_asset["BNB"].users_total == "0.00000000"
    assert [(h.account, h.balance) for h in by_asset["BNB"].house_balances] == [("exchange_fees", "-0.00002000")]


async def test_house_entries_carry_the_trade_and_the_order(client: Client) -> None:
    ann = await funded(client, "ann")
    await client.stub.SettleTrade(
        trade(ann, "BTCUSDT:7", exchange_fee_asset="BNB", exchange_fee_amount="0.00002"), metadata=SERVICE
    )
    newest_first = await house_entries(client)
    assert [(e.account, e.asset, e.kind, e.amount, e.balance_after) for e in newest_first] == [
        ("exchange_fees", "BNB", user_pb2.HOUSE_ENTRY_KIND_EXCHANGE_FEE, "-0.00002000", "-0.00002000"),
        ("fee_income", "BTC", user_pb2.HOUSE_ENTRY_KIND_TRADE_FEE, "0.00001000", "0.00001000"),
    ]
    assert {(e.reference, e.order_id) for e in newest_first} == {("BTCUSDT:7", f"ord-{ann}")}
    assert all(e.create_time.seconds > 0 and int(e.entry_id) > 0 for e in newest_first)
    user_fee = [e for e in await client.entries(ann) if e.kind == user_pb2.LEDGER_ENTRY_KIND_FEE]
    assert [(e.asset, e.reference, D(e.available_delta) + D(e.locked_delta)) for e in user_fee] == [
        ("BTC", "BTCUSDT:7", D("-0.00001"))
    ], "the user's fee entry is the other side of fee_income's"


async def test_ledger_totals_add_users_and_house_and_balance_against_the_flows(client: Client) -> None:
    ann, bob = await funded(client, "ann"), await funded(client, "bob", reserve="990")
    await client.deposit(bob, "BTC", "0.5", "fund-bob-btc")
    await client.stub.Withdraw(
        pb.WithdrawRequest(user_id=bob, asset="USDT", amount="5", request_id="wd-bob"), metadata=ADMIN
    )
    await client.stub.SettleTrade(
        trade(ann, "T:1", exchange_fee_asset="BNB", exchange_fee_amount="0.0001"), metadata=SERVICE
    )
    await client.stub.SettleTrade(
        trade(bob, "T:2", exchange_fee_asset="BTC", exchange_fee_amount="0.00001"), metadata=SERVICE
    )
    await client.stub.SettleTrade(
        trade(bob, "T:3", fee_asset="USDT", fee_amount="0.49", exchange_fee_asset="USDT", exchange_fee_amount="0.49"),
        metadata=SERVICE,
    )
    by_asset = await totals(client)
    assert sorted(by_asset) == ["BNB", "BTC", "USDT"]

    usdt = by_asset["USDT"]
    # ann: 500 available, 10 locked; bob: 5 available, 990 - 490 - 490 - the 0.49 fee = 9.51 locked.
    assert (usdt.users_available, usdt.users_locked) == ("505.00000000", "19.51000000")
    assert D(usdt.users_total) == D(usdt.users_available) + D(usdt.users_locked)
    assert [(h.account, h.balance) for h in usdt.house_balances] == [
        ("exchange_fees", "-0.49000000"),
        ("fee_income", "0.49000000"),
    ]
    assert usdt.house_total == "0.00000000"
    # deposits - withdrawals - debits - exchange fees: 2000 - 5 - 1470 - 0.49
    assert D(usdt.users_total) + D(usdt.house_total) == D("524.51")

    btc = by_asset["BTC"]
    assert btc.users_total == "0.52998000"  # 0.5 deposited + 3 x 0.01 credited - 2 x 0.00001 fees
    assert [(h.account, h.balance) for h in btc.house_balances] == [
        ("exchange_fees", "-0.00001000"),
        ("fee_income", "0.00002000"),
    ]
    assert D(btc.users_total) + D(btc.house_total) == D("0.5") + D("0.03") - D("0.00001")
    assert (by_asset["BNB"].users_total, by_asset["BNB"].house_total) == ("0.00000000", "-0.00010000")

    assert await totals(client, SERVICE) == by_asset, "the service token reads the same figures"
    key = await client.new_key(ann)
    code, _ = await rich_status(client.stub.GetLedgerTotals(pb.GetLedgerTotalsRequest(), metadata=key))
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_list_house_entries_pages_newest_first_and_filters(client: Client) -> None:
    ann = await funded(client, "ann")
    for i in range(4):
        fee_asset = "BNB" if i % 2 else "BTC"
        await client.stub.SettleTrade(
            trade(ann, f"T:{i}", debit_amount="100", exchange_fee_asset=fee_asset, exchange_fee_amount="0.0001"),
            metadata=SERVICE,
        )
    everything = await house_entries(client, page_size=1000)
    assert len(everything) == 8
    ids = [int(e.entry_id) for e in everything]
    assert ids == sorted(ids, reverse=True), "newest first"
    paged = await house_entries(client, page_size=3)
    assert [e.entry_id for e in paged] == [e.entry_id for e in everything]
    first = await client.stub.ListHouseEntries(pb.ListHouseEntriesRequest(page_size=3), metadata=ADMIN)
    assert len(first.entries) == 3 and first.next_page_token
    last = await client.stub.ListHouseEntries(pb.ListHouseEntriesRequest(page_size=8), metadata=ADMIN)
    assert len(last.entries) == 8 and last.next_page_token == ""

    income = await house_entries(client, page_size=2, account="fee_income")
    assert [e.reference for e in income] == ["T:3", "T:2", "T:1", "T:0"]
    assert [e.balance_after for e in income] == ["0.00004000", "0.00003000", "0.00002000", "0.00001000"]
    bnb = await house_entries(client, account="exchange_fees", asset="BNB")
    assert [(e.reference, e.balance_after) for e in bnb] == [("T:3", "-0.00020000"), ("T:1", "-0.00010000")]
    assert [e.account for e in await house_entries(client, asset="BNB")] == ["exchange_fees", "exchange_fees"]


async def test_the_same_trade_with_another_exchange_fee_is_aborted_and_changes_nothing(client: Client) -> None:
    ann = await funded(client, "ann")
    first = await client.stub.SettleTrade(
        trade(ann, "T:1", exchange_fee_asset="BNB", exchange_fee_amount="0.0001"), metadata=SERVICE
    )
    before = db_state(client.service)
    again = await client.stub.SettleTrade(
        trade(ann, "T:1", exchange_fee_asset="BNB", exchange_fee_amount="0.00010000"), metadata=SERVICE
    )
    assert again == first
    assert db_state(client.service) == before, "a retry books nothing twice, the house's entries included"
    for other in (
        {"exchange_fee_asset": "BNB", "exchange_fee_amount": "0.0002"},
        {"exchange_fee_asset": "USDT", "exchange_fee_amount": "0.0001"},
        {},
    ):
        code, status = await rich_status(client.stub.SettleTrade(trade(ann, "T:1", **other), metadata=SERVICE))
        assert code == grpc.StatusCode.ABORTED, other
        info = error_info(status)
        assert info is not None and info.metadata["field"] == "trade_id"
        assert db_state(client.service) == before


async def test_a_settlement_without_an_exchange_fee_books_only_the_users_fee_for_the_house(client: Client) -> None:
    ann = await funded(client, "ann")
    await client.stub.SettleTrade(trade(ann, "T:1"), metadata=SERVICE)
    await client.stub.SettleTrade(trade(ann, "T:2", fee_amount="", fee_asset=""), metadata=SERVICE)
    assert [(e.account, e.reference) for e in await house_entries(client)] == [("fee_income", "T:1")]


async def test_settle_with_release_id_books_the_house_side_too(client: Client) -> None:
    ann = await funded(client, "ann")
    response = await client.stub.SettleTrade(
        trade(ann, "T:1", release_id="final", exchange_fee_asset="BNB", exchange_fee_amount="0.0001"),
        metadata=SERVICE,
    )
    assert response.released == "10.00000000"
    assert [(e.account, e.asset, e.amount) for e in await house_entries(client)] == [
        ("exchange_fees", "BNB", "-0.00010000"),
        ("fee_income", "BTC", "0.00001000"),
    ]


async def test_house_entries_are_append_only(client: Client) -> None:
    ann = await funded(client, "ann")
    await client.stub.SettleTrade(trade(ann, "T:1"), metadata=SERVICE)
    for sql in ("UPDATE house_entries SET amount = '5.00000000'", "DELETE FROM house_entries"):
        with pytest.raises(DBAPIError, match="append-only"):
            client.service.transactions.write_sync(lambda repo, q=sql: repo.conn.execute(text(q)))
    assert len(await house_entries(client)) == 1


async def test_a_database_from_before_the_house_accounts_is_upgraded_at_start(db_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{db_path}", synchronous="NORMAL")
    upgrade(engine, tables.HISTORY, "0001")  # the schema before the house accounts
    with engine.begin() as conn:
        user = User("usr_01J9Z3ABCDEFGHJKMNPQRSTVW0", "ann", "ann@example.com", UserStatus.ACTIVE, 1, 1)
        conn.execute(
            tables.users.insert(),
            {
                "user_id": user.user_id,
                "username": user.username,
                "email": user.email,
                "status": user.status.value,
                "create_ms": 1,
                "update_ms": 1,
            },
        )
    engine.dispose()

    running = await start(make_config(db_path))
    try:
        async with grpc.aio.insecure_channel(running.addr) as channel:
            client = Client(channel, running)
            await client.deposit(user.user_id, "USDT", "1000", "fund")
            await client.reserve("ord-1", user.user_id, "USDT", "500")
            await client.stub.SettleTrade(
                trade(user.user_id, "T:1", order_id="ord-1", exchange_fee_asset="BNB", exchange_fee_amount="0.1"),
                metadata=SERVICE,
            )
            assert len(await house_entries(client)) == 2
            triggers = running.transactions.read_sync(
                lambda repo: sorted(
                    r[0] for r in repo.conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'trigger'"))
                )
            )
            assert triggers == [
                "api_key_grants_no_delete",
                "api_key_grants_no_update",
                "audit_events_no_delete",
                "audit_events_no_update",
                "house_entries_no_delete",
                "house_entries_no_update",
                "ledger_entries_no_delete",
                "ledger_entries_no_update",
            ]
    finally:
        await running.stop(grace=0.5)
