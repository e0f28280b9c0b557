"""Reservations racing for one balance never over-reserve: in one process, and across two on one database
(a SQLite file: its write lock; PostgreSQL: row locks), on both engines."""

from __future__ import annotations

import asyncio
from collections import Counter
from decimal import Decimal

import grpc

from services.user_service.bootstrap import RunningService, start
from tests.integration.user_service.conftest import make_config
from tests.integration.user_service.helpers import SERVICE, Client
from trading.user.v1 import user_service_pb2 as pb


async def _race(clients: list[Client], user: str, count: int) -> Counter[grpc.StatusCode]:
    async def one(i: int) -> grpc.StatusCode:
        request = pb.ReserveFundsRequest(order_id=f"ord-{i}", user_id=user, asset="USDT", amount="1")
        try:
            await clients[i % len(clients)].stub.ReserveFunds(request, metadata=SERVICE)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    return Counter(await asyncio.gather(*(one(i) for i in range(count))))


async def test_200_concurrent_reservations_of_1_against_100(engine_client: Client) -> None:
    client = engine_client
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "100", "d")
    batches_before = client.service.transactions.batches
    outcome = await _race([client], user, 200)
    assert outcome == {grpc.StatusCode.OK: 100, grpc.StatusCode.FAILED_PRECONDITION: 100}
    assert await client.balances(user) == {"USDT": ("0.00000000", "100.00000000", "100.00000000")}
    await client.assert_ledger_explains_balances(user)
    # Group commit: the 200 requests did not need 200 transactions (not a timing assertion:
    # with all 200 queued at once the writer must take several per transaction).
    assert client.service.transactions.batches - batches_before < 200


async def test_the_same_race_through_two_service_instances_on_one_database(new_db_url) -> None:
    url = new_db_url("users")
    first: RunningService = await start(make_config(url))
    second: RunningService = await start(make_config(url))
    try:
        async with grpc.aio.insecure_channel(first.addr) as a, grpc.aio.insecure_channel(second.addr) as b:
            one, two = Client(a, first), Client(b, second)
            user = await one.new_user("ann")
            await one.deposit(user, "USDT", "100", "d")
            outcome = await _race([one, two], user, 200)
            assert outcome == {grpc.StatusCode.OK: 100, grpc.StatusCode.FAILED_PRECONDITION: 100}
            # Both processes' views agree, and each served part of the successes.
            for view in (one, two):
                assert await view.balances(user) == {"USDT": ("0.00000000", "100.00000000", "100.00000000")}
                await view.assert_ledger_explains_balances(user)
            assert first.transactions.batches > 2 and second.transactions.batches > 1
    finally:
        await first.stop(grace=0.5)
        await second.stop(grace=0.5)


async def test_settlements_and_releases_racing_on_one_order_never_go_negative(engine_client: Client) -> None:
    client = engine_client
    user = await client.new_user("ann")
    await client.deposit(user, "USDT", "100", "d")
    await client.reserve("ord-1", user, "USDT", "100")
    calls = []
    for i in range(50):
        calls.append(
            client.stub.SettleTrade(
                pb.SettleTradeRequest(
                    trade_id=f"T:{i}",
                    order_id="ord-1",
                    user_id=user,
                    debit_asset="USDT",
                    debit_amount="3",
                    credit_asset="BTC",
                    credit_amount="0.0001",
                    fee_asset="USDT",
                    fee_amount="0.01",
                ),
                metadata=SERVICE,
            )
        )
        calls.append(
            client.stub.ReleaseFunds(
                pb.ReleaseFundsRequest(order_id="ord-1", release_id=f"R:{i}", amount="1"), metadata=SERVICE
            )
        )
    results = await asyncio.gather(*calls, return_exceptions=True)
    failures = [r for r in results if isinstance(r, Exception)]
    assert all(
        isinstance(f, grpc.aio.AioRpcError) and f.code() == grpc.StatusCode.FAILED_PRECONDITION for f in failures
    )
    await client.assert_ledger_explains_balances(user)
    final = await client.stub.ReleaseFunds(pb.ReleaseFundsRequest(order_id="ord-1", release_id="end"), metadata=SERVICE)
    reservation = final.reservation
    assert Decimal(reservation.consumed) + Decimal(reservation.released) == Decimal(reservation.reserved) == 100
    assert (await client.balances(user))["USDT"][1] == "0.00000000", "locked equals what the reservation held"
    await client.assert_ledger_explains_balances(user)
