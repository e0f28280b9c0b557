"""gRPC client of trading.user.v1.UserService (service token), implementing ``UserPort``."""

from __future__ import annotations

from decimal import Decimal

import grpc

from services.order_service.domain.model import Caller, Scope, SettleTrade, UserStatus
from services.order_service.domain.reconciliation import LedgerTotal
from shared.client import ServiceCaller
from shared.money import fmt
from shared.proto_time import ms_from_ts, ts_from_ms
from trading.user.v1 import user_pb2, user_service_pb2, user_service_pb2_grpc

STATUS_IN = {
    user_pb2.USER_STATUS_ACTIVE: UserStatus.ACTIVE,
    user_pb2.USER_STATUS_INACTIVE: UserStatus.INACTIVE,
    user_pb2.USER_STATUS_SUSPENDED: UserStatus.SUSPENDED,
}
SCOPE_IN = {user_pb2.SCOPE_READ: Scope.READ, user_pb2.SCOPE_TRADE: Scope.TRADE}
RESERVATIONS_PAGE = 500


class GrpcUsers:
    """The user service over one shared channel."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str):
        self.stub = user_service_pb2_grpc.UserServiceStub(channel)
        self.call = ServiceCaller(service_token, what="user service")

    async def authenticate(self, api_key: str, timeout: float, *, client_peer: str = "") -> Caller:
        request = user_service_pb2.AuthenticateApiKeyRequest(api_key=api_key, client_peer=client_peer)
        response = await self.call(self.stub.AuthenticateApiKey, request, timeout=timeout)
        user = response.user
        # A user service that predates scopes answers none: its keys are all trade keys.
        scopes = (
            frozenset(SCOPE_IN[s] for s in response.scopes if s in SCOPE_IN) if response.scopes else frozenset(Scope)
        )
        return Caller(
            user_id=user.user_id,
            status=STATUS_IN.get(user.status, UserStatus.UNKNOWN),
            key_id=response.key_id,
            scopes=scopes,
            expire_ms=ms_from_ts(response.expire_time) if response.HasField("expire_time") else None,
        )

    async def reserve_funds(self, order_id: str, user_id: str, asset: str, amount: Decimal, timeout: float) -> None:
        request = user_service_pb2.ReserveFundsRequest(
            order_id=order_id, user_id=user_id, asset=asset, amount=fmt(amount)
        )
        await self.call(self.stub.ReserveFunds, request, timeout=timeout)

    async def release_funds(self, order_id: str, release_id: str, amount: Decimal | None, timeout: float) -> None:
        request = user_service_pb2.ReleaseFundsRequest(
            order_id=order_id, release_id=release_id, amount="" if amount is None else fmt(amount)
        )
        await self.call(self.stub.ReleaseFunds, request, timeout=timeout)

    async def open_reservations(self, after: str, before: str, timeout: float) -> list[str]:
        found: list[str] = []
        while True:
            request = user_service_pb2.ListReservationsRequest(
                after_order_id=after, before_order_id=before, open_only=True, page_size=RESERVATIONS_PAGE
            )
            response = await self.call(self.stub.ListReservations, request, timeout=timeout)
            found.extend(r.order_id for r in response.reservations)
            if len(response.reservations) < RESERVATIONS_PAGE:
                return found
            after = response.reservations[-1].order_id

    async def ledger_totals(self, timeout: float) -> dict[str, LedgerTotal]:
        response = await self.call(
            self.stub.GetLedgerTotals, user_service_pb2.GetLedgerTotalsRequest(), timeout=timeout
        )
        return {
            t.asset: LedgerTotal(
                users_available=Decimal(t.users_available or "0"),
                users_locked=Decimal(t.users_locked or "0"),
                house_total=Decimal(t.house_total or "0"),
            )
            for t in response.totals
        }

    async def settle_trade(self, trade: SettleTrade, timeout: float, *, release_id: str = "") -> None:
        request = user_service_pb2.SettleTradeRequest(
            trade_id=trade.trade_id,
            order_id=trade.order_id,
            user_id=trade.user_id,
            debit_asset=trade.debit_asset,
            debit_amount=fmt(trade.debit_amount),
            credit_asset=trade.credit_asset,
            credit_amount=fmt(trade.credit_amount),
            fee_asset=trade.fee_asset,
            fee_amount=fmt(trade.fee_amount),
            exchange_fee_asset=trade.exchange_fee_asset,
            exchange_fee_amount=fmt(trade.exchange_fee_amount) if trade.exchange_fee_amount else "",
            trade_time=ts_from_ms(trade.trade_time_ms),
            release_id=release_id,
        )
        await self.call(self.stub.SettleTrade, request, timeout=timeout)
