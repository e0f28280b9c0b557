"""Ledger arithmetic: what each money operation does to balances, entries and reservations.

Every function is pure: it takes the current state, checks the rules and returns the new state
plus the entries that explain it, or raises (``InsufficientFunds``, ``FailedPrecondition``)
without changing anything. Storage then writes the outcome in one transaction.

Invariants kept for every (user, asset):
- available >= 0 and locked >= 0;
- available == sum(entry.available_delta) and locked == sum(entry.locked_delta);
- locked == sum of the remainders of the user's reservations in that asset;
- for every reservation, 0 <= remaining = reserved - consumed - released.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal

from services.user_service.domain.commands import Deposit, Release, Reserve, Settle, Withdraw
from services.user_service.domain.model import Balance, EntryKind, LedgerEntry, Reservation, User, UserStatus
from shared.errors import FailedPrecondition
from shared.money import ZERO


class UserNotActive(FailedPrecondition):
    """Only ACTIVE users may reserve funds."""

    default_reason = "USER_NOT_ACTIVE"


class ReservationMismatch(FailedPrecondition):
    """A trade does not fit the order's reservation (missing, another user, another asset)."""

    default_reason = "RESERVATION_MISMATCH"


@dataclass
class Outcome:
    """The result of one operation: touched balances after it, new entries, the reservation after it."""

    balances: dict[str, Balance] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)
    reservation: Reservation | None = None

    def post(
        self,
        balance: Balance,
        kind: EntryKind,
        available_delta: Decimal,
        locked_delta: Decimal,
        *,
        reference: str,
        now_ms: int,
        order_id: str | None = None,
    ) -> Balance:
        """Apply one change to ``balance`` (raising if it goes negative) and record its entry."""
        after = balance.moved(available_delta, locked_delta)
        self.balances[after.asset] = after
        self.entries.append(
            LedgerEntry(
                user_id=after.user_id,
                asset=after.asset,
                kind=kind,
                available_delta=available_delta,
                locked_delta=locked_delta,
                available_after=after.available,
                locked_after=after.locked,
                reference=reference,
                create_ms=now_ms,
                order_id=order_id,
            )
        )
        return after


def deposit(balance: Balance, command: Deposit, now_ms: int) -> Outcome:
    """Credit available."""
    outcome = Outcome()
    outcome.post(balance, EntryKind.DEPOSIT, command.amount, ZERO, reference=command.request_id, now_ms=now_ms)
    return outcome


def withdraw(balance: Balance, command: Withdraw, now_ms: int) -> Outcome:
    """Debit available; more than available raises InsufficientFunds."""
    outcome = Outcome()
    outcome.post(balance, EntryKind.WITHDRAWAL, -command.amount, ZERO, reference=command.request_id, now_ms=now_ms)
    return outcome


def reserve(user: User, balance: Balance, command: Reserve, now_ms: int) -> Outcome:
    """Move funds from available to locked for an order of an ACTIVE user."""
    if user.status is not UserStatus.ACTIVE:
        raise UserNotActive(
            f"user {user.user_id} is {user.status.value}; only ACTIVE users may reserve funds",
            metadata={"user_id": user.user_id, "status": user.status.value},
        )
    outcome = Outcome()
    order = command.order_id
    outcome.post(
        balance, EntryKind.RESERVE, -command.amount, command.amount, reference=order, now_ms=now_ms, order_id=order
    )
    outcome.reservation = Reservation(
        order_id=command.order_id, user_id=user.user_id, asset=balance.asset, reserved=command.amount
    )
    return outcome


def release(reservation: Reservation, balance: Balance, command: Release, now_ms: int) -> tuple[Decimal, Outcome]:
    """Return part or all of what the reservation still holds; asking for more releases what is left."""
    remaining = reservation.remaining
    # Clamped rather than refused: an order that ends races with its last fills, and the proto
    # already makes "nothing left" release zero; the response says how much really moved.
    amount = remaining if command.amount is None else min(command.amount, remaining)
    outcome = Outcome(reservation=reservation)
    if amount > 0:
        order = reservation.order_id
        outcome.post(balance, EntryKind.RELEASE, amount, -amount, reference=order, now_ms=now_ms, order_id=order)
        outcome.reservation = replace(reservation, released=reservation.released + amount)
    return amount, outcome


def settle(reservation: Reservation | None, balances: dict[str, Balance], command: Settle, now_ms: int) -> Outcome:
    """Book one trade: debit from the reservation (then from available), credit, then the fee.

    A fee in the credit asset is taken from what the trade just credited (available); a fee in
    the debit asset is taken from what the reservation still holds, then from available.
    ``balances`` must hold the user's debit and credit assets (zero balances if new).
    """
    if reservation is None:
        raise ReservationMismatch(
            f"order {command.order_id} has no reservation to settle against", metadata={"order_id": command.order_id}
        )
    if reservation.user_id != command.user_id:
        raise ReservationMismatch(
            f"the reservation of order {command.order_id} belongs to another user",
            metadata={"order_id": command.order_id},
        )
    if reservation.asset != command.debit_asset:
        raise ReservationMismatch(
            f"order {command.order_id} reserved {reservation.asset}, not {command.debit_asset}",
            metadata={"order_id": command.order_id, "reserved_asset": reservation.asset},
        )
    outcome = Outcome()

    from_locked = min(command.debit_amount, reservation.remaining)
    from_available = command.debit_amount - from_locked

    def book(balance: Balance, kind: EntryKind, available_delta: Decimal, locked_delta: Decimal) -> None:
        outcome.post(
            balance,
            kind,
            available_delta,
            locked_delta,
            reference=command.trade_id,
            now_ms=now_ms,
            order_id=command.order_id,
        )

    book(balances[command.debit_asset], EntryKind.TRADE_DEBIT, -from_available, -from_locked)
    consumed = reservation.consumed + from_locked

    book(balances[command.credit_asset], EntryKind.TRADE_CREDIT, command.credit_amount, ZERO)

    if command.fee_amount > 0:
        fee_balance = outcome.balances[command.fee_asset]
        if command.fee_asset == command.debit_asset:
            fee_locked = min(command.fee_amount, reservation.reserved - consumed - reservation.released)
        else:
            fee_locked = ZERO
        fee_available = command.fee_amount - fee_locked
        book(fee_balance, EntryKind.FEE, -fee_available, -fee_locked)
        consumed += fee_locked

    outcome.reservation = replace(reservation, consumed=consumed)
    return outcome
