"""Results of the money operations, and how a result is kept for idempotent replays.

The first call with an idempotency key stores its result next to the key; a repeated call with
the same content gets that stored result back (Stripe-style), a repeated call with other content
is refused with ABORTED and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.user_service.domain.model import Balance, Reservation
from shared.errors import Aborted
from shared.money import fmt


class IdempotencyConflict(Aborted):
    """An idempotency key was reused with different content."""

    default_reason = "IDEMPOTENCY_KEY_REUSED"


def check_replay(scope: str, key: str, stored_fingerprint: str, fingerprint: str) -> None:
    """Raise IdempotencyConflict unless the stored content equals the new one."""
    if stored_fingerprint != fingerprint:
        field = {"funds": "request_id", "reserve": "order_id", "release": "release_id", "trade": "trade_id"}[scope]
        raise IdempotencyConflict(
            f"{field} {key!r} was already used for a different request",
            metadata={"field": field, "key": key[:128]},
        )


@dataclass(frozen=True, slots=True)
class FundsResult:
    """Result of Deposit and Withdraw: the balance after the movement."""

    balance: Balance


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """Result of ReserveFunds."""

    balance: Balance
    reservation: Reservation


@dataclass(frozen=True, slots=True)
class ReleaseResult:
    """Result of ReleaseFunds: what this release returned, and the reservation after it (if any)."""

    released: Decimal
    reservation: Reservation | None


@dataclass(frozen=True, slots=True)
class SettleResult:
    """Result of SettleTrade: the touched balances sorted by asset, and the reservation after it."""

    balances: tuple[Balance, ...]
    reservation: Reservation


@dataclass(frozen=True, slots=True)
class SettleReleaseResult:
    """Result of SettleTrade with a release_id: the trade's balances and the reservation as they are
    after the trade and the release, and what the release returned.

    Never stored: the trade and the release each keep their own record (a ``SettleResult`` and a
    ``ReleaseResult``), exactly as if they had been two calls.
    """

    balances: tuple[Balance, ...]
    reservation: Reservation
    released: Decimal


Result = FundsResult | ReserveResult | ReleaseResult | SettleResult


def _balance(b: Balance) -> list[str]:
    return [b.user_id, b.asset, fmt(b.available), fmt(b.locked)]


def _unbalance(raw: list[str]) -> Balance:
    return Balance(raw[0], raw[1], Decimal(raw[2]), Decimal(raw[3]))


def _reservation(r: Reservation | None) -> list[str] | None:
    if r is None:
        return None
    return [r.order_id, r.user_id, r.asset, fmt(r.reserved), fmt(r.consumed), fmt(r.released)]


def _unreservation(raw: list[str] | None) -> Reservation | None:
    if raw is None:
        return None
    return Reservation(raw[0], raw[1], raw[2], Decimal(raw[3]), Decimal(raw[4]), Decimal(raw[5]))


def encode(result: Result) -> str:
    """Serialise a result for the idempotency record (decimals as exact strings)."""
    body: dict[str, Any]
    if isinstance(result, FundsResult):
        body = {"t": "funds", "b": _balance(result.balance)}
    elif isinstance(result, ReserveResult):
        body = {"t": "reserve", "b": _balance(result.balance), "r": _reservation(result.reservation)}
    elif isinstance(result, ReleaseResult):
        body = {"t": "release", "x": fmt(result.released), "r": _reservation(result.reservation)}
    else:
        body = {"t": "settle", "bs": [_balance(b) for b in result.balances], "r": _reservation(result.reservation)}
    return json.dumps(body, separators=(",", ":"))


def decode(text: str) -> Result:
    """Read back what ``encode`` wrote."""
    body = json.loads(text)
    kind = body["t"]
    if kind == "funds":
        return FundsResult(_unbalance(body["b"]))
    if kind == "reserve":
        reservation = _unreservation(body["r"])
        assert reservation is not None
        return ReserveResult(_unbalance(body["b"]), reservation)
    if kind == "release":
        return ReleaseResult(Decimal(body["x"]), _unreservation(body["r"]))
    if kind == "settle":
        reservation = _unreservation(body["r"])
        assert reservation is not None
        return SettleResult(tuple(_unbalance(b) for b in body["bs"]), reservation)
    raise ValueError(f"unknown stored result type {kind!r}")
