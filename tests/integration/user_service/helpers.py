"""A thin test client over the generated stub: metadata per caller, and whole-state snapshots."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from sqlalchemy import text

from services.user_service.bootstrap import RunningService
from trading.user.v1 import user_service_pb2 as pb
from trading.user.v1 import user_service_pb2_grpc

ADMIN_TOKEN = "admin-token-for-user-service-tests"
SERVICE_TOKEN = "service-token-for-user-service-tests"


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


ADMIN = bearer(ADMIN_TOKEN)
SERVICE = bearer(SERVICE_TOKEN)


class Client:
    """The stub plus shortcuts used across the tests."""

    def __init__(self, channel: grpc.aio.Channel, service: RunningService | None = None):
        self.stub = user_service_pb2_grpc.UserServiceStub(channel)
        self.service = service

    async def new_user(self, name: str) -> str:
        response = await self.stub.CreateUser(
            pb.CreateUserRequest(username=name, email=f"{name}@example.com"), metadata=ADMIN
        )
        return response.user.user_id

    async def new_key(self, user_id: str, label: str = "test") -> tuple[tuple[str, str], ...]:
        response = await self.stub.CreateApiKey(pb.CreateApiKeyRequest(user_id=user_id, label=label), metadata=ADMIN)
        return bearer(response.api_key)

    async def deposit(self, user_id: str, asset: str, amount: str, request_id: str) -> pb.DepositResponse:
        return await self.stub.Deposit(
            pb.DepositRequest(user_id=user_id, asset=asset, amount=amount, request_id=request_id), metadata=ADMIN
        )

    async def reserve(self, order_id: str, user_id: str, asset: str, amount: str) -> pb.ReserveFundsResponse:
        return await self.stub.ReserveFunds(
            pb.ReserveFundsRequest(order_id=order_id, user_id=user_id, asset=asset, amount=amount), metadata=SERVICE
        )

    async def balances(self, user_id: str) -> dict[str, tuple[str, str, str]]:
        response = await self.stub.GetBalances(pb.GetBalancesRequest(user_id=user_id), metadata=ADMIN)
        return {b.asset: (b.available, b.locked, b.total) for b in response.balances}

    async def entries(self, user_id: str, asset: str = "", page_size: int = 0) -> list[Any]:
        """Every ledger entry of a user, following next_page_token to the end."""
        out: list[Any] = []
        token = ""
        while True:
            response = await self.stub.ListLedgerEntries(
                pb.ListLedgerEntriesRequest(user_id=user_id, asset=asset, page_size=page_size, page_token=token),
                metadata=ADMIN,
            )
            out.extend(response.entries)
            token = response.next_page_token
            if not token:
                return out

    async def assert_ledger_explains_balances(self, user_id: str) -> None:
        """available == sum(available_delta) and locked == sum(locked_delta), per asset, exactly."""
        sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
        for entry in await self.entries(user_id, page_size=1000):
            sums[entry.asset][0] += Decimal(entry.available_delta)
            sums[entry.asset][1] += Decimal(entry.locked_delta)
        balances = await self.balances(user_id)
        assert set(sums) == set(balances)
        for asset, (available, locked, total) in balances.items():
            assert Decimal(available) == sums[asset][0], asset
            assert Decimal(locked) == sums[asset][1], asset
            assert Decimal(total) == Decimal(available) + Decimal(locked)
            assert Decimal(available) >= 0 and Decimal(locked) >= 0


def db_state(service: RunningService) -> dict[str, list[tuple[Any, ...]]]:
    """Every row that money (the house's included), users and keys consist of (login timestamps left out:
    reads may touch them)."""
    queries = {
        "users": "SELECT user_id, username, email, status, update_ms FROM users ORDER BY user_id",
        "api_keys": "SELECT key_id, user_id, label, secret_sha256, revoke_ms FROM api_keys ORDER BY key_id",
        "balances": "SELECT * FROM balances ORDER BY user_id, asset",
        "ledger_entries": "SELECT * FROM ledger_entries ORDER BY entry_id",
        "reservations": "SELECT * FROM reservations ORDER BY order_id",
        "idempotency_keys": "SELECT * FROM idempotency_keys ORDER BY scope, key",
        "house_balances": "SELECT * FROM house_balances ORDER BY account, asset",
        "house_entries": "SELECT * FROM house_entries ORDER BY entry_id",
    }
    return service.transactions.read_sync(
        lambda repo: {name: [tuple(r) for r in repo.conn.execute(text(sql))] for name, sql in queries.items()}
    )


async def rich_status(call: Any) -> tuple[grpc.StatusCode, status_pb2.Status | None]:
    """Await a call; return its code and the google.rpc.Status from its trailers (OK and None on success)."""
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code(), await rpc_status.aio.from_call(call)
    return grpc.StatusCode.OK, None


def error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def bad_field(status: status_pb2.Status | None) -> str | None:
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            return bad.field_violations[0].field
    return None
