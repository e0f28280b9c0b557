"""The user service client: SettleTrade with a release id settles and releases in one call."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import grpc

from services.order_service.adapters.user_client import GrpcUsers
from services.order_service.domain.model import SettleTrade
from trading.user.v1 import user_service_pb2 as pb

TRADE = SettleTrade(
    trade_id="BTCUSDT:1",
    order_id="ord-1",
    user_id="usr_01J9Z3ABCDEFGHJKMNPQRSTVW0",
    debit_asset="USDT",
    debit_amount=Decimal("490"),
    credit_asset="BTC",
    credit_amount=Decimal("0.01"),
    fee_asset="BTC",
    fee_amount=Decimal("0.00001"),
    trade_time_ms=1_700_000_000_000,
)


class Stub:
    """Answers SettleTrade with ``released`` when the request carries a release id."""

    def __init__(self, released: str):
        self.released = released
        self.requests: list[Any] = []

    async def SettleTrade(self, request: pb.SettleTradeRequest, **_: Any) -> pb.SettleTradeResponse:
        self.requests.append(request)
        return pb.SettleTradeResponse(released=self.released if request.release_id else "")


async def settle(stub: Stub, release_id: str = "") -> None:
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:  # never used: the stub answers
        users = GrpcUsers(channel, "service-token")
        users.stub = stub  # type: ignore[assignment]
        await users.settle_trade(TRADE, 1.0, release_id=release_id)


async def test_settle_with_a_release_id_is_one_call() -> None:
    stub = Stub(released="10.00000000")
    await settle(stub, "ord-1:final")
    assert [type(r).__name__ for r in stub.requests] == ["SettleTradeRequest"]
    assert stub.requests[0].release_id == "ord-1:final"
    assert stub.requests[0].debit_amount == "490.00000000"


async def test_settle_without_a_release_id_sends_none() -> None:
    stub = Stub(released="")
    await settle(stub)
    assert [(type(r).__name__, r.release_id) for r in stub.requests] == [("SettleTradeRequest", "")]
