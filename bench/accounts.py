"""The benchmark's users: create them with balances and API keys, and check their ledgers afterwards."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import grpc

from trading.user.v1 import user_service_pb2, user_service_pb2_grpc

# Per user: far more than a run can lock in resting orders (about 15 USDT each) or trade away.
DEPOSITS = {"USDT": "1000000", "BTC": "20", "ETH": "300", "BNB": "1500"}


@dataclass(frozen=True)
class BenchUser:
    """One user the load process acts for."""

    user_id: str
    username: str
    api_key: str


async def create_users(
    target: str, admin_token: str, count: int, run_id: str, deposits: dict[str, str] | None = None
) -> list[BenchUser]:
    """Create ``count`` users, one API key each, and deposit ``deposits`` for each."""
    metadata = (("authorization", f"Bearer {admin_token}"),)
    async with grpc.aio.insecure_channel(target) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)

        async def one(index: int) -> BenchUser:
            name = f"bench-{run_id}-{index:03d}"
            created = await stub.CreateUser(
                user_service_pb2.CreateUserRequest(username=name, email=f"{name}@bench.example.com"),
                metadata=metadata,
                timeout=10,
            )
            user_id = created.user.user_id
            key = await stub.CreateApiKey(
                user_service_pb2.CreateApiKeyRequest(user_id=user_id, label="bench"), metadata=metadata, timeout=10
            )
            for asset, amount in (deposits or DEPOSITS).items():
                await stub.Deposit(
                    user_service_pb2.DepositRequest(
                        user_id=user_id, asset=asset, amount=amount, request_id=f"bench-{run_id}-{index}-{asset}"
                    ),
                    metadata=metadata,
                    timeout=10,
                )
            return BenchUser(user_id=user_id, username=name, api_key=key.api_key)

        return list(await asyncio.gather(*(one(i) for i in range(count))))


async def check_ledgers(target: str, admin_token: str, users: list[BenchUser]) -> dict[str, Any]:
    """For every user and asset: does available + locked equal the sum of the ledger entries, exactly?"""
    metadata = (("authorization", f"Bearer {admin_token}"),)
    mismatches: list[dict[str, str]] = []
    negatives: list[dict[str, str]] = []
    entries_read = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = user_service_pb2_grpc.UserServiceStub(channel)
        for user in users:
            balances = await stub.GetBalances(
                user_service_pb2.GetBalancesRequest(user_id=user.user_id), metadata=metadata, timeout=30
            )
            sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0), Decimal(0)])
            token = ""
            while True:
                page = await stub.ListLedgerEntries(
                    user_service_pb2.ListLedgerEntriesRequest(user_id=user.user_id, page_size=1000, page_token=token),
                    metadata=metadata,
                    timeout=30,
                )
                for entry in page.entries:
                    sums[entry.asset][0] += Decimal(entry.available_delta or "0")
                    sums[entry.asset][1] += Decimal(entry.locked_delta or "0")
                entries_read += len(page.entries)
                token = page.next_page_token
                if not token:
                    break
            seen = set()
            for balance in balances.balances:
                seen.add(balance.asset)
                available, locked = Decimal(balance.available or "0"), Decimal(balance.locked or "0")
                ledger_available, ledger_locked = sums.get(balance.asset, [Decimal(0), Decimal(0)])
                if available < 0 or locked < 0:
                    negatives.append({"user": user.username, "asset": balance.asset, "available": str(available)})
                if (available, locked) != (ledger_available, ledger_locked) or (
                    balance.total and Decimal(balance.total) != available + locked
                ):
                    mismatches.append(
                        {
                            "user": user.username,
                            "asset": balance.asset,
                            "balance": f"{available} + {locked} locked",
                            "ledger": f"{ledger_available} + {ledger_locked} locked",
                        }
                    )
            for asset, (ledger_available, ledger_locked) in sums.items():
                if asset not in seen and (ledger_available != 0 or ledger_locked != 0):
                    mismatches.append(
                        {"user": user.username, "asset": asset, "balance": "none", "ledger": f"{ledger_available}"}
                    )
    return {
        "consistent": not mismatches and not negatives,
        "users": len(users),
        "entries": entries_read,
        "mismatches": mismatches[:20],
        "mismatch_count": len(mismatches),
        "negative_balances": negatives[:20],
    }
