"""The ledger through a real gRPC client: exact sums, idempotency, reservations, settlement, paging."""

from __future__ import annotations

import grpc
import pytest

from tests.integration.user_service.helpers import (
    ADMIN,
    SERVICE,
    Client,
    bad_field,
    db_state,
    error_info,
    rich_status,
)
from trading.user.v1 import user_pb2
from trading.user.v1 import user_service_pb2 as pb


async def test_deposits_of_point_one_three_times_and_point_two_give_exactly_half(client: Client) -> None:
    user = await client.new_user("ann")
    for i, amount in enumerate(["0.1", "0.1", "0.1", "0.2"]):
        response = await client.deposit(user, "USDT", amount, f"dep-{i}")
    assert response.balance.available == "0.50000000"
    assert await client.balances(user) == {"USDT": ("0.50000000", "0.00000000", "0.50000000")}
    await client.assert_ledger_explains_balances(user)


async def test_a_retried_deposit_is_credited_once_and_answers_like_the_first(client: Client) -> None:
    user = await client.new_user("ann")
    first = await client.deposit(user, "BTC", "1.5", "wire-42")
    await client.deposit(user, "BTC", "1", "wire-43")
    again = await client.deposit(user, "BTC", "1.50000000", "wire-42")
    assert again == first, "the replay returns the balance after the first deposit"
    assert (await client.balances(user))["BTC"][0] == "2.50000000"
    assert len(await client.entries(user)) == 2
    await client.assert_ledger_explains_balances(user)


async def test_the_same_request_id_with_other_content_is_aborted_and_changes_nothing(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "BTC", "1", "r-1")
    before = db_state(client.service)
    for other in [
        pb.DepositRequest(user_id=user, asset="BTC", amount="2", request_id="r-1"),
        pb.DepositRequest(user_id=user, asset="ETH", amount="1", request_id="r-1"),
    ]:
        code, status = await rich_status(client.stub.Deposit(other, metadata=ADMIN))
        assert code == grpc.StatusCode.ABORTED
        assert error_info(status).reason == "IDEMPOTENCY_KEY_REUSED"
    withdraw = pb.WithdrawRequest(user_id=user, asset="BTC", amount="1", request_id="r-1")
    code, _ = await rich_status(client.stub.Withdraw(withdraw, metadata=ADMIN))
    assert code == grpc.StatusCode.ABORTED
    assert db_state(client.service) == before


async def test_withdrawing_more_than_available_fails_and_changes_nothing(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "100", "d")
    await client.reserve("o-1", user, "USDT", "60")
    before = db_state(client.service)
    call = client.stub.Withdraw(
        pb.WithdrawRequest(user_id=user, asset="USDT", amount="40.00000001", request_id="w"), metadata=ADMIN
    )
    code, status = await rich_status(call)
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    info = error_info(status)
    assert info.reason == "INSUFFICIENT_FUNDS"
    assert info.domain == "trading.core"
    assert info.metadata["available"] == "40.00000000"
    assert db_state(client.service) == before
    # Refusals record no key: the same request_id works once there is enough.
    await client.deposit(user, "USDT", "1", "d2")
    response = await client.stub.Withdraw(
        pb.WithdrawRequest(user_id=user, asset="USDT", amount="40.00000001", request_id="w"), metadata=ADMIN
    )
    assert response.balance.available == "0.99999999"
    await client.assert_ledger_explains_balances(user)


async def test_invalid_argument_carries_a_bad_request_naming_the_field(client: Client) -> None:
    user = await client.new_user("ann")
    call = client.stub.Deposit(
        pb.DepositRequest(user_id=user, asset="BTC", amount="1e5", request_id="r"), metadata=ADMIN
    )
    code, status = await rich_status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_field(status) == "amount"
    assert error_info(status).metadata["field"] == "amount"


async def test_buy_order_reserve_partial_fills_and_release_the_rest(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "1000", "d")
    reserved = await client.reserve("ord-1", user, "USDT", "500.5")
    assert reserved.balance.available == "499.50000000"
    assert reserved.balance.locked == "500.50000000"
    assert reserved.reservation.remaining == "500.50000000"

    fill = pb.SettleTradeRequest(
        trade_id="BTCUSDT:1",
        order_id="ord-1",
        user_id=user,
        debit_asset="USDT",
        debit_amount="250.25",
        credit_asset="BTC",
        credit_amount="0.005",
        fee_asset="BTC",
        fee_amount="0.000005",
    )
    settled = await client.stub.SettleTrade(fill, metadata=SERVICE)
    assert [(b.asset, b.available, b.locked) for b in settled.balances] == [
        ("BTC", "0.00499500", "0.00000000"),
        ("USDT", "499.50000000", "250.25000000"),
    ]
    assert settled.reservation.consumed == "250.25000000"
    again = await client.stub.SettleTrade(fill, metadata=SERVICE)
    assert again == settled, "a repeated trade is booked once"

    release = pb.ReleaseFundsRequest(order_id="ord-1", release_id="ord-1:cancel")
    released = await client.stub.ReleaseFunds(release, metadata=SERVICE)
    assert released.released == "250.25000000"
    assert released.reservation.remaining == "0.00000000"
    assert (await client.stub.ReleaseFunds(release, metadata=SERVICE)) == released
    late = await client.stub.ReleaseFunds(pb.ReleaseFundsRequest(order_id="ord-1", release_id="late"), metadata=SERVICE)
    assert late.released == "0.00000000"

    assert await client.balances(user) == {
        "BTC": ("0.00499500", "0.00000000", "0.00499500"),
        "USDT": ("749.75000000", "0.00000000", "749.75000000"),
    }
    kinds = [e.kind for e in await client.entries(user)]
    assert kinds == [
        user_pb2.LEDGER_ENTRY_KIND_RELEASE,
        user_pb2.LEDGER_ENTRY_KIND_FEE,
        user_pb2.LEDGER_ENTRY_KIND_TRADE_CREDIT,
        user_pb2.LEDGER_ENTRY_KIND_TRADE_DEBIT,
        user_pb2.LEDGER_ENTRY_KIND_RESERVE,
        user_pb2.LEDGER_ENTRY_KIND_DEPOSIT,
    ]
    await client.assert_ledger_explains_balances(user)


async def test_sell_with_fee_in_the_debit_asset_beyond_the_reservation(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "BTC", "2", "d")
    await client.reserve("ord-s", user, "BTC", "1")
    fill = pb.SettleTradeRequest(
        trade_id="T:9",
        order_id="ord-s",
        user_id=user,
        debit_asset="BTC",
        debit_amount="1",
        credit_asset="USDT",
        credit_amount="60000",
        fee_asset="BTC",
        fee_amount="0.001",
    )
    settled = await client.stub.SettleTrade(fill, metadata=SERVICE)
    assert settled.reservation.consumed == "1.00000000"
    assert await client.balances(user) == {
        "BTC": ("0.99900000", "0.00000000", "0.99900000"),
        "USDT": ("60000.00000000", "0.00000000", "60000.00000000"),
    }
    await client.assert_ledger_explains_balances(user)


async def test_reserve_is_idempotent_on_order_id_and_refuses_other_content(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "100", "d")
    first = await client.reserve("ord-1", user, "USDT", "10")
    assert await client.reserve("ord-1", user, "USDT", "10.0") == first
    before = db_state(client.service)
    code, status = await rich_status(
        client.stub.ReserveFunds(
            pb.ReserveFundsRequest(order_id="ord-1", user_id=user, asset="USDT", amount="11"), metadata=SERVICE
        )
    )
    assert code == grpc.StatusCode.ABORTED
    assert error_info(status).metadata["field"] == "order_id"
    assert db_state(client.service) == before
    assert (await client.balances(user))["USDT"][:2] == ("90.00000000", "10.00000000")


async def test_settle_is_idempotent_on_trade_id_and_refuses_other_content(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "100", "d")
    await client.reserve("ord-1", user, "USDT", "50")
    fill = pb.SettleTradeRequest(
        trade_id="T:1",
        order_id="ord-1",
        user_id=user,
        debit_asset="USDT",
        debit_amount="20",
        credit_asset="BTC",
        credit_amount="0.001",
    )
    await client.stub.SettleTrade(fill, metadata=SERVICE)
    before = db_state(client.service)
    fill.credit_amount = "0.002"
    code, _ = await rich_status(client.stub.SettleTrade(fill, metadata=SERVICE))
    assert code == grpc.StatusCode.ABORTED
    assert db_state(client.service) == before


async def test_only_active_users_may_reserve(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "100", "d")
    await client.stub.UpdateUserStatus(
        pb.UpdateUserStatusRequest(user_id=user, status=user_pb2.USER_STATUS_SUSPENDED), metadata=ADMIN
    )
    before = db_state(client.service)
    code, status = await rich_status(
        client.stub.ReserveFunds(
            pb.ReserveFundsRequest(order_id="o", user_id=user, asset="USDT", amount="1"), metadata=SERVICE
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert error_info(status).reason == "USER_NOT_ACTIVE"
    assert db_state(client.service) == before
    await client.stub.UpdateUserStatus(
        pb.UpdateUserStatusRequest(user_id=user, status=user_pb2.USER_STATUS_ACTIVE), metadata=ADMIN
    )
    assert (await client.reserve("o", user, "USDT", "1")).balance.locked == "1.00000000"


async def test_ledger_pages_newest_first_and_filters_by_asset(client: Client) -> None:
    user = await client.new_user("ann")
    for i in range(7):
        await client.deposit(user, "BTC" if i % 2 else "ETH", f"{i + 1}", f"d{i}")
    page = await client.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(user_id=user, page_size=3), metadata=ADMIN)
    assert [e.reference for e in page.entries] == ["d6", "d5", "d4"]
    assert page.next_page_token
    everything = await client.entries(user, page_size=3)
    assert [e.reference for e in everything] == [f"d{i}" for i in range(6, -1, -1)]
    ids = [int(e.entry_id) for e in everything]
    assert ids == sorted(ids, reverse=True)
    btc = await client.entries(user, asset="BTC", page_size=2)
    assert [e.reference for e in btc] == ["d5", "d3", "d1"]
    assert btc[0].available_after == "12.00000000"
    default = await client.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(user_id=user), metadata=ADMIN)
    assert len(default.entries) == 7 and not default.next_page_token


async def test_get_balances_is_sorted_by_asset_and_keeps_emptied_assets(client: Client) -> None:
    user = await client.new_user("ann")
    for asset in ["USDT", "BTC", "ETH"]:
        await client.deposit(user, asset, "1", f"d-{asset}")
    await client.stub.Withdraw(
        pb.WithdrawRequest(user_id=user, asset="ETH", amount="1", request_id="w"), metadata=ADMIN
    )
    response = await client.stub.GetBalances(pb.GetBalancesRequest(user_id=user), metadata=ADMIN)
    assert [b.asset for b in response.balances] == ["BTC", "ETH", "USDT"]
    assert response.balances[1].total == "0.00000000"


async def test_release_of_an_order_without_reservation_releases_zero(client: Client) -> None:
    response = await client.stub.ReleaseFunds(
        pb.ReleaseFundsRequest(order_id="never", release_id="x"), metadata=SERVICE
    )
    assert response.released == "0.00000000"
    assert not response.HasField("reservation")


@pytest.mark.parametrize("amount", ["99999999999999999999.99999999", "123456789012.12345678"])
async def test_large_and_precise_amounts_are_exact_on_the_wire_and_in_storage(client: Client, amount: str) -> None:
    user = await client.new_user("ann")
    response = await client.deposit(user, "BTC", amount, "big")
    assert response.balance.available == amount
    assert (await client.balances(user))["BTC"][0] == amount
