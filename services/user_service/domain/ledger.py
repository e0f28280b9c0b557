"""Ledger arithmetic: what each money operation does to balances, entries and reservations.

Every function is pure: it takes the current state, checks the rules and returns the new state
plus the entries that explain it, or raises (``InsufficientFunds``, ``FailedPrecondition``)
without changing anything. Storage then writes the change in one transaction.

Invariants kept for every (user, asset):
- available >= 0 and locked >= 0;
- available == sum(entry.available_delta) and locked == sum(entry.locked_delta);
- locked == sum of the remainders of the user's reservations in that asset;
- for every reservation, 0 <= remaining = reserved - consumed - released.

The ledger is double entry: besides the users' balances it holds house accounts (``HouseAccount``),
each (account, asset) balance the sum of its house entries. A user's fee moves from the user to
``fee_income`` (same asset, same amount); what the exchange charged the platform's account is taken
from ``exchange_fees`` alone. So per asset, sum(users' available + locked) + sum(house balances)
changes only by deposits, withdrawals and exchange trades: + credits - debits - exchange fees.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal

from services.user_service.domain.commands import Deposit, Release, Reserve, Settle, Withdraw
from services.user_service.domain.model import (
    AssetTotals,
    Balance,
    EntryKind,
    HouseAccount,
    HouseBalance,
    HouseEntry,
    HouseEntryKind,
    LedgerEntry,
    Reservation,
    User,
    UserStatus,
)
from shared.errors import FailedPrecondition
from shared.money import CTX, ZERO

HouseKey = tuple[HouseAccount, str]
"""A house balance's identity: (account, asset)."""


class UserNotActive(FailedPrecondition):
    """Only ACTIVE users may reserve funds."""

    default_reason = "USER_NOT_ACTIVE"


class ReservationMismatch(FailedPrecondition):
    """A trade does not fit the order's reservation (missing, another user, another asset)."""

    default_reason = "RESERVATION_MISMATCH"


@dataclass
class LedgerChange:
    """What one money operation changes: touched balances after it, new entries, the reservation after it,
    and the touched house balances and their new entries."""

    balances: dict[str, Balance] = field(default_factory=dict)
    entries: list[LedgerEntry] = field(default_factory=list)
    reservation: Reservation | None = None
    house_balances: dict[HouseKey, HouseBalance] = field(default_factory=dict)
    house_entries: list[HouseEntry] = field(default_factory=list)

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

    def post_house(
        self,
        balance: HouseBalance,
        kind: HouseEntryKind,
        amount: Decimal,
        *,
        reference: str,
        order_id: str,
        now_ms: int,
    ) -> HouseBalance:
        """Apply one signed change to a house balance and record its entry."""
        after = balance.moved(amount)
        self.house_balances[(after.account, after.asset)] = after
        self.house_entries.append(
            HouseEntry(
                account=after.account,
                asset=after.asset,
                kind=kind,
                amount=amount,
                balance_after=after.balance,
                reference=reference,
                order_id=order_id,
                create_ms=now_ms,
            )
        )
        return after


def deposit(balance: Balance, command: Deposit, now_ms: int) -> LedgerChange:
    """Credit available."""
    change = LedgerChange()
    change.post(balance, EntryKind.DEPOSIT, command.amount, ZERO, reference=command.request_id, now_ms=now_ms)
    return change


def withdraw(balance: Balance, command: Withdraw, now_ms: int) -> LedgerChange:
    """Debit available; more than available raises InsufficientFunds."""
    change = LedgerChange()
    change.post(balance, EntryKind.WITHDRAWAL, -command.amount, ZERO, reference=command.request_id, now_ms=now_ms)
    return change


def reserve(user: User, balance: Balance, command: Reserve, now_ms: int) -> LedgerChange:
    """Move funds from available to locked for an order of an ACTIVE user."""
    if user.status is not UserStatus.ACTIVE:
        raise UserNotActive(
            f"user {user.user_id} is {user.status.value}; only ACTIVE users may reserve funds",
            metadata={"user_id": user.user_id, "status": user.status.value},
        )
    change = LedgerChange()
    order = command.order_id
    change.post(
        balance, EntryKind.RESERVE, -command.amount, command.amount, reference=order, now_ms=now_ms, order_id=order
    )
    change.reservation = Reservation(
        order_id=command.order_id, user_id=user.user_id, asset=balance.asset, reserved=command.amount
    )
    return change


def release(reservation: Reservation, balance: Balance, command: Release, now_ms: int) -> tuple[Decimal, LedgerChange]:
    """Return part or all of what the reservation still holds; asking for more releases what is left."""
    remaining = reservation.remaining
    # Clamped rather than refused: an order that ends races with its last fills, and the proto
    # already makes "nothing left" release zero; the response says how much really moved.
    amount = remaining if command.amount is None else min(command.amount, remaining)
    change = LedgerChange(reservation=reservation)
    if amount > 0:
        order = reservation.order_id
        change.post(balance, EntryKind.RELEASE, amount, -amount, reference=order, now_ms=now_ms, order_id=order)
        change.reservation = replace(reservation, released=reservation.released + amount)
    return amount, change


def house_keys(command: Settle) -> list[HouseKey]:
    """The house balances a trade touches: fee_income in the fee's asset, exchange_fees in the exchange fee's."""
    keys: list[HouseKey] = []
    if command.fee_amount > 0:
        keys.append((HouseAccount.FEE_INCOME, command.fee_asset))
    if command.exchange_fee_amount > 0:
        keys.append((HouseAccount.EXCHANGE_FEES, command.exchange_fee_asset))
    return keys


def _settled_reservation(reservation: Reservation | None, command: Settle) -> Reservation:
    """The reservation ``command`` settles against: the order's, of the same user and the debit asset."""
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
    return reservation


def settle(
    reservation: Reservation | None,
    balances: dict[str, Balance],
    house: dict[HouseKey, HouseBalance],
    command: Settle,
    now_ms: int,
) -> LedgerChange:
    """Book one trade: debit from the reservation (then from available), credit, the fee, the exchange fee.

    A fee in the credit asset is taken from what the trade just credited (available); a fee in
    the debit asset is taken from what the reservation still holds, then from available. The fee
    is credited to the house's ``fee_income``; the exchange fee is debited from the house's
    ``exchange_fees`` only, whatever its asset. ``balances`` must hold the user's debit and credit
    assets and ``house`` the balances of ``house_keys(command)`` (zero balances if new).
    """
    reservation = _settled_reservation(reservation, command)
    change = LedgerChange()

    from_locked = min(command.debit_amount, reservation.remaining)
    from_available = command.debit_amount - from_locked

    def book(balance: Balance, kind: EntryKind, available_delta: Decimal, locked_delta: Decimal) -> None:
        change.post(
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
        fee_balance = change.balances[command.fee_asset]
        if command.fee_asset == command.debit_asset:
            fee_locked = min(command.fee_amount, reservation.reserved - consumed - reservation.released)
        else:
            fee_locked = ZERO
        fee_available = command.fee_amount - fee_locked
        book(fee_balance, EntryKind.FEE, -fee_available, -fee_locked)
        consumed += fee_locked

    def book_house(key: HouseKey, kind: HouseEntryKind, amount: Decimal) -> None:
        change.post_house(
            house[key], kind, amount, reference=command.trade_id, order_id=command.order_id, now_ms=now_ms
        )

    if command.fee_amount > 0:
        book_house((HouseAccount.FEE_INCOME, command.fee_asset), HouseEntryKind.TRADE_FEE, command.fee_amount)
    if command.exchange_fee_amount > 0:
        key = (HouseAccount.EXCHANGE_FEES, command.exchange_fee_asset)
        book_house(key, HouseEntryKind.EXCHANGE_FEE, -command.exchange_fee_amount)

    change.reservation = replace(reservation, consumed=consumed)
    return change


def totals(users: Iterable[Balance], house: Iterable[HouseBalance]) -> list[AssetTotals]:
    """Per asset, the users' available and locked summed and the house balances, sorted by asset.

    Exact: every sum uses ``shared.money.CTX``, never a database SUM over the text columns.
    """
    available: dict[str, Decimal] = {}
    locked: dict[str, Decimal] = {}
    for b in users:
        available[b.asset] = CTX.add(available.get(b.asset, ZERO), b.available)
        locked[b.asset] = CTX.add(locked.get(b.asset, ZERO), b.locked)
    held: dict[str, list[HouseBalance]] = {}
    for h in house:
        held.setdefault(h.asset, []).append(h)
    return [
        AssetTotals(
            asset=asset,
            users_available=available.get(asset, ZERO),
            users_locked=locked.get(asset, ZERO),
            house=tuple(sorted(held.get(asset, []), key=lambda h: h.account.value)),
        )
        for asset in sorted(available.keys() | held.keys())
    ]
