"""gRPC servicer of trading.user.v1.UserService: authorize, decode, call a use case, encode.

No business rules here. Errors are ``shared.errors`` exceptions; the shared server interceptor
turns them into rich statuses (ErrorInfo, BadRequest naming the field) with ``shared.grpc_errors``.
"""

from __future__ import annotations

from services.user_service.api import codec
from services.user_service.api.auth import Authorizer, Principal
from services.user_service.domain import validation as v
from services.user_service.domain.commands import Deposit, Release, Reserve, Settle, Withdraw
from services.user_service.domain.throttle import client_host
from services.user_service.service.app import UserApp
from services.user_service.service.audit import AuditTrail
from shared.errors import InvalidArgument, PermissionDenied
from shared.money import fmt
from shared.proto_time import ms_from_ts
from shared.server import Context
from trading.user.v1 import user_service_pb2 as pb
from trading.user.v1 import user_service_pb2_grpc


class UserServiceServicer(user_service_pb2_grpc.UserServiceServicer):
    """Serves users, API keys and the ledger."""

    def __init__(self, users: UserApp, authorizer: Authorizer, trail: AuditTrail):
        self._users = users
        self._auth = authorizer
        self._trail = trail

    async def _owned(self, context: Context, rpc: str, user_id: str) -> str:
        """Authorize a call about ``user_id``; a user's API key may leave it empty (it means the key's user).

        Returns the user the call is about.
        """
        return (await self._owned_by(context, rpc, user_id))[1]

    async def _owned_by(self, context: Context, rpc: str, user_id: str) -> tuple[Principal, str]:
        """Like ``_owned``, also returning the caller."""
        principal = await self._auth.authorize(context, rpc)
        if not user_id and principal.user_id is not None:
            user_id = principal.user_id
        v.user_id(user_id)
        self._auth.owner(context, rpc, principal, user_id)
        return principal, user_id

    # --- users --------------------------------------------------------------------------------

    async def CreateUser(self, request: pb.CreateUserRequest, context: Context) -> pb.CreateUserResponse:
        principal = await self._auth.authorize(context, "CreateUser")
        actor = self._auth.actor(context, "CreateUser", principal)
        user = await self._users.create_user(request.username, request.email, actor)
        return pb.CreateUserResponse(user=codec.encode_user(user))

    async def GetUser(self, request: pb.GetUserRequest, context: Context) -> pb.GetUserResponse:
        user_id = await self._owned(context, "GetUser", request.user_id)
        user = await self._users.get_user(user_id)
        return pb.GetUserResponse(user=codec.encode_user(user))

    async def ListUsers(self, request: pb.ListUsersRequest, context: Context) -> pb.ListUsersResponse:
        await self._auth.authorize(context, "ListUsers")
        status = codec.decode_status(request.status)
        page = await self._users.list_users(status, request.page_size, request.page_token)
        return pb.ListUsersResponse(
            users=[codec.encode_user(u) for u in page.items], next_page_token=page.next_page_token
        )

    async def UpdateUserStatus(
        self, request: pb.UpdateUserStatusRequest, context: Context
    ) -> pb.UpdateUserStatusResponse:
        principal = await self._auth.authorize(context, "UpdateUserStatus")
        v.user_id(request.user_id)
        actor = self._auth.actor(context, "UpdateUserStatus", principal)
        user = await self._users.update_user_status(request.user_id, codec.decode_status(request.status), actor)
        return pb.UpdateUserStatusResponse(user=codec.encode_user(user))

    # --- API keys -----------------------------------------------------------------------------

    async def CreateApiKey(self, request: pb.CreateApiKeyRequest, context: Context) -> pb.CreateApiKeyResponse:
        principal, user_id = await self._owned_by(context, "CreateApiKey", request.user_id)
        scopes = codec.decode_scopes(request.scopes)
        expire_ms = ms_from_ts(request.expire_time) if request.HasField("expire_time") else None
        actor = self._auth.actor(context, "CreateApiKey", principal)
        try:
            secret, key = await self._users.create_api_key(user_id, request.label, scopes, expire_ms, actor)
        except PermissionDenied as exc:
            self._auth.denied(context, "CreateApiKey", principal, exc)
            raise
        return pb.CreateApiKeyResponse(key_id=key.key_id, api_key=secret, key=codec.encode_api_key(key))

    async def ListApiKeys(self, request: pb.ListApiKeysRequest, context: Context) -> pb.ListApiKeysResponse:
        user_id = await self._owned(context, "ListApiKeys", request.user_id)
        keys = await self._users.list_api_keys(user_id)
        return pb.ListApiKeysResponse(keys=[codec.encode_api_key(k) for k in keys])

    async def RevokeApiKey(self, request: pb.RevokeApiKeyRequest, context: Context) -> pb.RevokeApiKeyResponse:
        principal = await self._auth.authorize(context, "RevokeApiKey")
        try:
            key = await self._users.revoke_api_key(request.key_id, self._auth.actor(context, "RevokeApiKey", principal))
        except PermissionDenied as exc:
            self._auth.denied(context, "RevokeApiKey", principal, exc)
            raise
        return pb.RevokeApiKeyResponse(key=codec.encode_api_key(key))

    # --- balances and the ledger ---------------------------------------------------------------

    async def Deposit(self, request: pb.DepositRequest, context: Context) -> pb.DepositResponse:
        principal = await self._auth.authorize(context, "Deposit")
        command = Deposit.parse(request.user_id, request.asset, request.amount, request.request_id)
        result = await self._users.deposit(command, self._auth.actor(context, "Deposit", principal))
        return pb.DepositResponse(balance=codec.encode_balance(result.balance))

    async def Withdraw(self, request: pb.WithdrawRequest, context: Context) -> pb.WithdrawResponse:
        principal = await self._auth.authorize(context, "Withdraw")
        command = Withdraw.parse(request.user_id, request.asset, request.amount, request.request_id)
        result = await self._users.withdraw(command, self._auth.actor(context, "Withdraw", principal))
        return pb.WithdrawResponse(balance=codec.encode_balance(result.balance))

    async def GetBalances(self, request: pb.GetBalancesRequest, context: Context) -> pb.GetBalancesResponse:
        user_id = await self._owned(context, "GetBalances", request.user_id)
        balances = await self._users.get_balances(user_id)
        return pb.GetBalancesResponse(balances=[codec.encode_balance(b) for b in balances])

    async def ListLedgerEntries(
        self, request: pb.ListLedgerEntriesRequest, context: Context
    ) -> pb.ListLedgerEntriesResponse:
        user_id = await self._owned(context, "ListLedgerEntries", request.user_id)
        page = await self._users.list_entries(user_id, request.asset, request.page_size, request.page_token)
        return pb.ListLedgerEntriesResponse(
            entries=[codec.encode_entry(e) for e in page.items], next_page_token=page.next_page_token
        )

    # --- internal ------------------------------------------------------------------------------

    async def AuthenticateApiKey(
        self, request: pb.AuthenticateApiKeyRequest, context: Context
    ) -> pb.AuthenticateApiKeyResponse:
        await self._auth.authorize(context, "AuthenticateApiKey")
        if not request.api_key:
            raise InvalidArgument("api_key", "is required")
        # Throttled by the end client's address the calling service passes, never by the caller's own.
        key, user = await self._auth.authenticate_key(
            request.api_key, client_host(request.client_peer), "AuthenticateApiKey"
        )
        response = pb.AuthenticateApiKeyResponse(
            user=codec.encode_user(user), key_id=key.key_id, scopes=codec.encode_scopes(key.scopes)
        )
        if key.expire_ms is not None:
            response.expire_time.FromMilliseconds(key.expire_ms)
        return response

    async def ReserveFunds(self, request: pb.ReserveFundsRequest, context: Context) -> pb.ReserveFundsResponse:
        await self._auth.authorize(context, "ReserveFunds")
        command = Reserve.parse(request.order_id, request.user_id, request.asset, request.amount)
        result = await self._users.reserve(command)
        return pb.ReserveFundsResponse(
            balance=codec.encode_balance(result.balance), reservation=codec.encode_reservation(result.reservation)
        )

    async def ListReservations(
        self, request: pb.ListReservationsRequest, context: Context
    ) -> pb.ListReservationsResponse:
        await self._auth.authorize(context, "ListReservations")
        found = await self._users.list_reservations(
            request.after_order_id,
            request.before_order_id,
            open_only=request.open_only,
            page_size=request.page_size,
        )
        return pb.ListReservationsResponse(reservations=[codec.encode_reservation(r) for r in found])

    async def ReleaseFunds(self, request: pb.ReleaseFundsRequest, context: Context) -> pb.ReleaseFundsResponse:
        await self._auth.authorize(context, "ReleaseFunds")
        command = Release.parse(request.order_id, request.release_id, request.amount)
        result = await self._users.release(command)
        response = pb.ReleaseFundsResponse(released=fmt(result.released))
        if result.reservation is not None:
            response.reservation.CopyFrom(codec.encode_reservation(result.reservation))
        return response

    async def SettleTrade(self, request: pb.SettleTradeRequest, context: Context) -> pb.SettleTradeResponse:
        await self._auth.authorize(context, "SettleTrade")
        command = Settle.parse(
            trade_id=request.trade_id,
            order_id=request.order_id,
            user_id=request.user_id,
            debit_asset=request.debit_asset,
            debit_amount=request.debit_amount,
            credit_asset=request.credit_asset,
            credit_amount=request.credit_amount,
            fee_asset=request.fee_asset,
            fee_amount=request.fee_amount,
            trade_ms=ms_from_ts(request.trade_time) if request.HasField("trade_time") else None,
            exchange_fee_asset=request.exchange_fee_asset,
            exchange_fee_amount=request.exchange_fee_amount,
        )
        if request.release_id:
            release = Release.parse(command.order_id, request.release_id, "")
            combined = await self._users.settle_and_release(command, release)
            return pb.SettleTradeResponse(
                balances=[codec.encode_balance(b) for b in combined.balances],
                reservation=codec.encode_reservation(combined.reservation),
                released=fmt(combined.released),
            )
        result = await self._users.settle(command)
        return pb.SettleTradeResponse(
            balances=[codec.encode_balance(b) for b in result.balances],
            reservation=codec.encode_reservation(result.reservation),
        )

    # --- house accounts ------------------------------------------------------------------------

    async def GetLedgerTotals(self, request: pb.GetLedgerTotalsRequest, context: Context) -> pb.GetLedgerTotalsResponse:
        await self._auth.authorize(context, "GetLedgerTotals")
        totals = await self._users.ledger_totals()
        return pb.GetLedgerTotalsResponse(totals=[codec.encode_totals(t) for t in totals])

    async def ListHouseEntries(
        self, request: pb.ListHouseEntriesRequest, context: Context
    ) -> pb.ListHouseEntriesResponse:
        await self._auth.authorize(context, "ListHouseEntries")
        page = await self._users.list_house_entries(
            request.account, request.asset, request.page_size, request.page_token
        )
        return pb.ListHouseEntriesResponse(
            entries=[codec.encode_house_entry(e) for e in page.items], next_page_token=page.next_page_token
        )

    # --- the audit trail ------------------------------------------------------------------------

    async def ListAuditEvents(self, request: pb.ListAuditEventsRequest, context: Context) -> pb.ListAuditEventsResponse:
        await self._auth.authorize(context, "ListAuditEvents")
        page = await self._users.list_audit_events(
            request.user_id,
            codec.decode_audit_kind(request.kind),
            start_ms=ms_from_ts(request.start_time) if request.HasField("start_time") else None,
            end_ms=ms_from_ts(request.end_time) if request.HasField("end_time") else None,
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return pb.ListAuditEventsResponse(
            events=[codec.encode_audit_event(e) for e in page.items], next_page_token=page.next_page_token
        )

    async def RecordAuditEvents(
        self, request: pb.RecordAuditEventsRequest, context: Context
    ) -> pb.RecordAuditEventsResponse:
        await self._auth.authorize(context, "RecordAuditEvents")
        accepted = await self._trail.accept(codec.decode_recorded_events(request.events))
        return pb.RecordAuditEventsResponse(accepted=accepted)
