"""SettleTrade with a release_id: the trade and the release of the rest in one transaction.

The combined call must leave exactly what SettleTrade followed by ReleaseFunds leaves (every row
of balances, ledger entries, reservations and idempotency records), whichever part was already
done before, and a retry must change nothing. The first tests compare whole databases built by
the real use cases over the real repository; the last ones go over gRPC.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from services.user_service.adapters.transactions import SqlTransactions, migrate
from services.user_service.domain.commands import Deposit, Release, Reserve, Settle
from services.user_service.domain.model import User, UserStatus
from services.user_service.domain.results import IdempotencyConflict
from services.user_service.service import accounts, ledger
from shared.db import create_db_engine
from tests.integration.user_service.helpers import SERVICE, Client, db_state, error_info, rich_status
from trading.user.v1 import user_service_pb2 as pb

ANN = "usr_01J9Z3ABCDEFGHJKMNPQRSTVW0"
NOW = 1_700_000_000_000
D = Decimal

Op = Callable[[Any], Any]


class Db:
    """One SQLite file with ann funded (USDT 1000, BTC 1) and order 'ord-1' reserving ``reserved``."""

    def __init__(self, path: Path, reserved: str = "500", asset: str = "USDT"):
        engine = create_db_engine(f"sqlite:///{path}", synchronous="OFF")
        migrate(engine)
        self.tx = SqlTransactions(engine)
        self.run(
            lambda repo: accounts.create_user(repo, User(ANN, "ann", "ann@example.com", UserStatus.ACTIVE, NOW, NOW))
        )
        for a, amount in [("USDT", "1000"), ("BTC", "1")]:
            funding = Deposit.parse(ANN, a, amount, f"fund-{a}")
            self.run(lambda repo, c=funding: ledger.deposit(repo, c, NOW))
        self.run(lambda repo: ledger.reserve(repo, Reserve.parse("ord-1", ANN, asset, reserved), NOW))

    def run(self, op: Op) -> Any:
        return self.tx.write_sync(op)

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        tables = ["balances", "ledger_entries", "reservations", "idempotency_keys", "house_balances", "house_entries"]
        return self.tx.read_sync(
            lambda repo: {
                t: [tuple(r) for r in repo.conn.execute(text(f"SELECT * FROM {t} ORDER BY 1, 2"))] for t in tables
            }
        )


@pytest.fixture
def dbs(tmp_path: Path) -> Iterator[Callable[..., Db]]:
    made: list[Db] = []

    def make(name: str, **kw: str) -> Db:
        db = Db(tmp_path / f"{name}.db", **kw)
        made.append(db)
        return db

    yield make
    for db in made:
        db.tx.close()


def trade(trade_id: str = "T:2", **over: str) -> Settle:
    fields = {
        "trade_id": trade_id,
        "order_id": "ord-1",
        "user_id": ANN,
        "debit_asset": "USDT",
        "debit_amount": "245",
        "credit_asset": "BTC",
        "credit_amount": "0.005",
        "fee_asset": "BTC",
        "fee_amount": "0.000005",
    }
    return Settle.parse(**{**fields, **over})


FINAL = Release.parse("ord-1", "ord-1:final", "")


def settle(command: Settle) -> Op:
    return lambda repo: ledger.settle(repo, command, NOW)


def release(command: Release) -> Op:
    return lambda repo: ledger.release(repo, command, NOW)


def combined(command: Settle, rel: Release = FINAL) -> Op:
    return lambda repo: ledger.settle_and_release(repo, command, rel, NOW)


TRADES = {
    "fee in the credit asset": {},
    "fee in the debit asset": {"fee_asset": "USDT", "fee_amount": "0.245"},
    "no fee": {"fee_asset": "", "fee_amount": ""},
    "exactly what is left": {"debit_amount": "250"},
    "beyond the reservation": {"debit_amount": "260", "fee_asset": "USDT", "fee_amount": "1"},
    "exchange fee in BNB": {"exchange_fee_asset": "BNB", "exchange_fee_amount": "0.00012"},
    "exchange fee in the debit asset": {"exchange_fee_asset": "USDT", "exchange_fee_amount": "0.2"},
}


@pytest.mark.parametrize("over", TRADES.values(), ids=TRADES.keys())
def test_the_combined_call_writes_exactly_what_settle_then_release_write(dbs: Callable[..., Db], over: dict) -> None:
    separate, together = dbs("separate"), dbs("together")
    for db in (separate, together):
        db.run(settle(trade("T:1", debit_amount="250", credit_amount="0.005")))  # an earlier partial fill

    settled = separate.run(settle(trade(**over)))
    released = separate.run(release(FINAL))
    result = together.run(combined(trade(**over)))

    assert together.snapshot() == separate.snapshot()
    assert result.released == released.released
    assert result.reservation == released.reservation and result.reservation.remaining == 0
    after = {b.asset: b for b in separate.tx.read_sync(lambda repo: repo.list_balances(ANN))}
    assert result.balances == tuple(after[b.asset] for b in settled.balances)
    assert after["USDT"].locked == 0


def test_the_combined_call_releases_the_difference_of_a_better_price(dbs: Callable[..., Db]) -> None:
    db = dbs("one")
    result = db.run(combined(trade("T:1", debit_amount="480", credit_amount="0.01")))
    assert result.released == D("20")
    assert [(b.asset, b.available, b.locked) for b in result.balances] == [
        ("BTC", D("1.009995"), D("0")),
        ("USDT", D("520"), D("0")),
    ]
    kinds = [row[3] for row in db.snapshot()["ledger_entries"]][-4:]
    assert kinds == ["TRADE_DEBIT", "TRADE_CREDIT", "FEE", "RELEASE"]
    house = [(row[1], row[2], row[3], row[4], row[6], row[7]) for row in db.snapshot()["house_entries"]]
    assert house == [("fee_income", "BTC", "TRADE_FEE", "0.00000500", "T:1", "ord-1")]


def test_a_retried_combined_call_changes_nothing_and_answers_the_same(dbs: Callable[..., Db]) -> None:
    db = dbs("one")
    first = db.run(combined(trade()))
    before = db.snapshot()
    assert db.run(combined(trade())) == first
    assert db.snapshot() == before


def test_after_the_trade_alone_the_combined_call_still_releases(dbs: Callable[..., Db]) -> None:
    separate, together = dbs("separate"), dbs("together")
    separate.run(settle(trade()))
    separate.run(release(FINAL))
    together.run(settle(trade()))  # the trade was settled, then the combined call came (a retry, say)
    result = together.run(combined(trade()))
    assert together.snapshot() == separate.snapshot()
    assert result.released == D("255")
    assert result.reservation.remaining == 0
    assert {b.asset: b.locked for b in result.balances} == {"BTC": 0, "USDT": 0}


def test_after_a_release_with_that_id_the_combined_call_still_settles(dbs: Callable[..., Db]) -> None:
    separate, together = dbs("separate"), dbs("together")
    for db in (separate, together):
        db.run(release(FINAL))  # the order ended (everything released) before this trade was booked
    separate.run(settle(trade()))
    result = together.run(combined(trade()))
    assert together.snapshot() == separate.snapshot()
    assert result.released == D("500"), "the amount of the first release with that id"
    assert result.reservation.consumed == 0 and result.reservation.released == D("500")
    usdt = next(b for b in result.balances if b.asset == "USDT")
    assert (usdt.available, usdt.locked) == (D("755"), D("0")), "the trade was paid from available"


def test_a_later_release_funds_with_that_id_is_a_no_op(dbs: Callable[..., Db]) -> None:
    db = dbs("one")
    result = db.run(combined(trade()))
    before = db.snapshot()
    again = db.run(release(FINAL))
    assert again.released == result.released == D("255")
    assert again.reservation == result.reservation
    assert db.snapshot() == before
    assert db.run(settle(trade())).reservation.remaining == D("255"), "the trade's own record is the trade alone"


@pytest.mark.parametrize(
    "earlier",
    [Release.parse("ord-1", "ord-1:final", "10"), Release.parse("ord-2", "ord-1:final", "")],
    ids=["a partial release", "another order"],
)
def test_a_release_id_used_with_other_content_refuses_the_whole_call(dbs: Callable[..., Db], earlier: Release) -> None:
    db = dbs("one")
    db.run(release(earlier))
    before = db.snapshot()
    with pytest.raises(IdempotencyConflict) as caught:
        db.run(combined(trade()))
    assert caught.value.metadata["field"] == "release_id"
    assert db.snapshot() == before, "not even the trade was booked"


def test_a_trade_id_used_with_other_content_refuses_the_whole_call(dbs: Callable[..., Db]) -> None:
    db = dbs("one")
    db.run(settle(trade()))
    before = db.snapshot()
    with pytest.raises(IdempotencyConflict) as caught:
        db.run(combined(trade(debit_amount="246")))
    assert caught.value.metadata["field"] == "trade_id"
    assert db.snapshot() == before, "not even the release was done"


def test_the_release_must_be_of_the_whole_rest_of_the_same_order(dbs: Callable[..., Db]) -> None:
    db = dbs("one")
    for bad in (Release.parse("ord-2", "x", ""), Release.parse("ord-1", "x", "1")):
        with pytest.raises(ValueError):
            db.run(combined(trade(), bad))


# --- over gRPC ------------------------------------------------------------------------------------


def fill(user: str, order_id: str, trade_id: str, release_id: str = "") -> pb.SettleTradeRequest:
    return pb.SettleTradeRequest(
        trade_id=trade_id,
        order_id=order_id,
        user_id=user,
        debit_asset="USDT",
        debit_amount="490",
        credit_asset="BTC",
        credit_amount="0.01",
        fee_asset="BTC",
        fee_amount="0.00001",
        release_id=release_id,
    )


def entries_of(entries: list[Any]) -> list[tuple[Any, ...]]:
    """A user's entries, oldest first, without ids, times and references (which name the user's own ids)."""
    return [(e.asset, e.kind, e.available_delta, e.locked_delta, e.available_after, e.locked_after) for e in entries]


async def test_over_grpc_one_call_books_what_two_calls_book(client: Client) -> None:
    two, one = await client.new_user("two"), await client.new_user("one")
    for user in (two, one):
        await client.deposit(user, "USDT", "1000", f"fund-{user}")
        await client.reserve(f"ord-{user}", user, "USDT", "500")

    await client.stub.SettleTrade(fill(two, f"ord-{two}", "T:two"), metadata=SERVICE)
    released = await client.stub.ReleaseFunds(
        pb.ReleaseFundsRequest(order_id=f"ord-{two}", release_id=f"ord-{two}:final"), metadata=SERVICE
    )
    response = await client.stub.SettleTrade(fill(one, f"ord-{one}", "T:one", f"ord-{one}:final"), metadata=SERVICE)

    assert response.released == released.released == "10.00000000"
    assert response.reservation.remaining == "0.00000000"
    assert [(b.asset, b.available, b.locked) for b in response.balances] == [
        ("BTC", "0.00999000", "0.00000000"),
        ("USDT", "510.00000000", "0.00000000"),
    ]
    assert await client.balances(one) == await client.balances(two)
    assert entries_of(await client.entries(one)) == entries_of(await client.entries(two))
    await client.assert_ledger_explains_balances(one)

    before = db_state(client.service)
    assert await client.stub.SettleTrade(fill(one, f"ord-{one}", "T:one", f"ord-{one}:final"), metadata=SERVICE) == (
        response
    )
    late = await client.stub.ReleaseFunds(
        pb.ReleaseFundsRequest(order_id=f"ord-{one}", release_id=f"ord-{one}:final"), metadata=SERVICE
    )
    assert late.released == "10.00000000"
    assert db_state(client.service) == before, "a retry and a later ReleaseFunds with that id change nothing"


async def test_over_grpc_without_release_id_nothing_is_released_and_released_is_empty(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "1000", "fund")
    await client.reserve("ord-1", user, "USDT", "500")
    response = await client.stub.SettleTrade(fill(user, "ord-1", "T:1"), metadata=SERVICE)
    assert response.released == ""
    assert response.reservation.remaining == "10.00000000"


async def test_over_grpc_a_release_id_reused_for_a_partial_release_is_aborted(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "1000", "fund")
    await client.reserve("ord-1", user, "USDT", "500")
    await client.stub.ReleaseFunds(
        pb.ReleaseFundsRequest(order_id="ord-1", release_id="rel", amount="1"), metadata=SERVICE
    )
    before = db_state(client.service)
    code, status = await rich_status(client.stub.SettleTrade(fill(user, "ord-1", "T:1", "rel"), metadata=SERVICE))
    assert code == grpc.StatusCode.ABORTED
    info = error_info(status)
    assert info is not None and info.metadata["field"] == "release_id"
    assert db_state(client.service) == before
