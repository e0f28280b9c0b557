"""Mapping between domain records and trading.user.v1 messages (decimals as 8-place strings)."""

from __future__ import annotations

from services.user_service.domain.model import (
    ApiKey,
    AssetTotals,
    Balance,
    EntryKind,
    HouseBalance,
    HouseEntry,
    HouseEntryKind,
    LedgerEntry,
    Reservation,
    User,
    UserStatus,
)
from shared.errors import InvalidArgument
from shared.money import fmt
from shared.timeutil import ts_from_ms
from trading.user.v1 import user_pb2, user_service_pb2

_STATUS_TO_PB = {
    UserStatus.ACTIVE: user_pb2.USER_STATUS_ACTIVE,
    UserStatus.INACTIVE: user_pb2.USER_STATUS_INACTIVE,
    UserStatus.SUSPENDED: user_pb2.USER_STATUS_SUSPENDED,
}
_STATUS_FROM_PB = {number: status for status, number in _STATUS_TO_PB.items()}
_KIND_TO_PB = {
    EntryKind.DEPOSIT: user_pb2.LEDGER_ENTRY_KIND_DEPOSIT,
    EntryKind.WITHDRAWAL: user_pb2.LEDGER_ENTRY_KIND_WITHDRAWAL,
    EntryKind.RESERVE: user_pb2.LEDGER_ENTRY_KIND_RESERVE,
    EntryKind.RELEASE: user_pb2.LEDGER_ENTRY_KIND_RELEASE,
    EntryKind.TRADE_DEBIT: user_pb2.LEDGER_ENTRY_KIND_TRADE_DEBIT,
    EntryKind.TRADE_CREDIT: user_pb2.LEDGER_ENTRY_KIND_TRADE_CREDIT,
    EntryKind.FEE: user_pb2.LEDGER_ENTRY_KIND_FEE,
}
_HOUSE_KIND_TO_PB = {
    HouseEntryKind.TRADE_FEE: user_pb2.HOUSE_ENTRY_KIND_TRADE_FEE,
    HouseEntryKind.EXCHANGE_FEE: user_pb2.HOUSE_ENTRY_KIND_EXCHANGE_FEE,
}


def status_from_pb(number: int, field: str = "status") -> UserStatus | None:
    """UNSPECIFIED gives None; a number the proto does not define is INVALID_ARGUMENT."""
    if number == user_pb2.USER_STATUS_UNSPECIFIED:
        return None
    try:
        return _STATUS_FROM_PB[number]  # type: ignore[index]
    except KeyError:
        raise InvalidArgument(field, f"unknown status {number}") from None


def user_to_pb(user: User) -> user_pb2.User:
    """A user for the wire."""
    message = user_pb2.User(
        user_id=user.user_id,
        username=user.username,
        email=user.email,
        status=_STATUS_TO_PB[user.status],
        create_time=ts_from_ms(user.create_ms),
        update_time=ts_from_ms(user.update_ms),
    )
    if user.last_login_ms is not None:
        message.last_login_time.FromMilliseconds(user.last_login_ms)
    return message


def api_key_to_pb(key: ApiKey) -> user_pb2.ApiKey:
    """A key's public record for the wire (never the secret nor its hash)."""
    message = user_pb2.ApiKey(
        key_id=key.key_id, user_id=key.user_id, label=key.label, create_time=ts_from_ms(key.create_ms)
    )
    if key.revoke_ms is not None:
        message.revoke_time.FromMilliseconds(key.revoke_ms)
    if key.last_used_ms is not None:
        message.last_used_time.FromMilliseconds(key.last_used_ms)
    return message


def balance_to_pb(balance: Balance) -> user_pb2.Balance:
    """A balance for the wire; total = available + locked."""
    return user_pb2.Balance(
        asset=balance.asset,
        available=fmt(balance.available),
        locked=fmt(balance.locked),
        total=fmt(balance.total),
    )


def entry_to_pb(entry: LedgerEntry) -> user_pb2.LedgerEntry:
    """A ledger entry for the wire."""
    return user_pb2.LedgerEntry(
        entry_id=str(entry.entry_id),
        user_id=entry.user_id,
        asset=entry.asset,
        kind=_KIND_TO_PB[entry.kind],
        available_delta=fmt(entry.available_delta),
        locked_delta=fmt(entry.locked_delta),
        available_after=fmt(entry.available_after),
        locked_after=fmt(entry.locked_after),
        reference=entry.reference,
        create_time=ts_from_ms(entry.create_ms),
    )


def reservation_to_pb(reservation: Reservation) -> user_service_pb2.Reservation:
    """A reservation for the wire."""
    return user_service_pb2.Reservation(
        order_id=reservation.order_id,
        user_id=reservation.user_id,
        asset=reservation.asset,
        reserved=fmt(reservation.reserved),
        consumed=fmt(reservation.consumed),
        released=fmt(reservation.released),
        remaining=fmt(reservation.remaining),
    )


def house_balance_to_pb(balance: HouseBalance) -> user_pb2.HouseBalance:
    """A house balance for the wire (signed)."""
    return user_pb2.HouseBalance(account=balance.account.value, asset=balance.asset, balance=fmt(balance.balance))


def house_entry_to_pb(entry: HouseEntry) -> user_pb2.HouseEntry:
    """A house entry for the wire."""
    return user_pb2.HouseEntry(
        entry_id=str(entry.entry_id),
        account=entry.account.value,
        asset=entry.asset,
        kind=_HOUSE_KIND_TO_PB[entry.kind],
        amount=fmt(entry.amount),
        balance_after=fmt(entry.balance_after),
        reference=entry.reference,
        order_id=entry.order_id,
        create_time=ts_from_ms(entry.create_ms),
    )


def totals_to_pb(totals: AssetTotals) -> user_service_pb2.AssetTotals:
    """One asset's ledger totals for the wire."""
    return user_service_pb2.AssetTotals(
        asset=totals.asset,
        users_available=fmt(totals.users_available),
        users_locked=fmt(totals.users_locked),
        users_total=fmt(totals.users_total),
        house_total=fmt(totals.house_total),
        house_balances=[house_balance_to_pb(h) for h in totals.house],
    )
