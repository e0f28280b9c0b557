"""Mapping between domain records and trading.user.v1 messages (decimals as 8-place strings)."""

from __future__ import annotations

from collections.abc import Iterable

from services.user_service.domain import audit
from services.user_service.domain.audit import AuditEvent, AuditKind, Role
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
    Scope,
    User,
    UserStatus,
)
from services.user_service.domain.throttle import client_host
from shared.errors import InvalidArgument
from shared.money import fmt
from shared.proto_time import ms_from_ts, ts_from_ms
from trading.user.v1 import user_pb2, user_service_pb2

STATUS_OUT = {
    UserStatus.ACTIVE: user_pb2.USER_STATUS_ACTIVE,
    UserStatus.INACTIVE: user_pb2.USER_STATUS_INACTIVE,
    UserStatus.SUSPENDED: user_pb2.USER_STATUS_SUSPENDED,
}
STATUS_IN = {number: status for status, number in STATUS_OUT.items()}
KIND_OUT = {
    EntryKind.DEPOSIT: user_pb2.LEDGER_ENTRY_KIND_DEPOSIT,
    EntryKind.WITHDRAWAL: user_pb2.LEDGER_ENTRY_KIND_WITHDRAWAL,
    EntryKind.RESERVE: user_pb2.LEDGER_ENTRY_KIND_RESERVE,
    EntryKind.RELEASE: user_pb2.LEDGER_ENTRY_KIND_RELEASE,
    EntryKind.TRADE_DEBIT: user_pb2.LEDGER_ENTRY_KIND_TRADE_DEBIT,
    EntryKind.TRADE_CREDIT: user_pb2.LEDGER_ENTRY_KIND_TRADE_CREDIT,
    EntryKind.FEE: user_pb2.LEDGER_ENTRY_KIND_FEE,
}
HOUSE_KIND_OUT = {
    HouseEntryKind.TRADE_FEE: user_pb2.HOUSE_ENTRY_KIND_TRADE_FEE,
    HouseEntryKind.EXCHANGE_FEE: user_pb2.HOUSE_ENTRY_KIND_EXCHANGE_FEE,
}
SCOPE_OUT: dict[Scope, user_pb2.Scope.ValueType] = {
    Scope.READ: user_pb2.SCOPE_READ,
    Scope.TRADE: user_pb2.SCOPE_TRADE,
}
SCOPE_IN = {number: scope for scope, number in SCOPE_OUT.items()}
# AuditKind's values are the proto names without their prefix.
AUDIT_KIND_OUT: dict[AuditKind, user_pb2.AuditEventKind.ValueType] = {
    kind: user_pb2.AuditEventKind.Value(f"AUDIT_EVENT_KIND_{kind.value}") for kind in AuditKind
}
AUDIT_KIND_IN = {number: kind for kind, number in AUDIT_KIND_OUT.items()}
MAX_RECORDED_EVENTS = 1000
"""Most events one RecordAuditEvents call may carry."""


def decode_status(number: user_pb2.UserStatus.ValueType, field: str = "status") -> UserStatus | None:
    """UNSPECIFIED gives None; a number the proto does not define is INVALID_ARGUMENT."""
    if number == user_pb2.USER_STATUS_UNSPECIFIED:
        return None
    try:
        return STATUS_IN[number]
    except KeyError:
        raise InvalidArgument(field, f"unknown status {number}") from None


def encode_user(user: User) -> user_pb2.User:
    """A user for the wire."""
    message = user_pb2.User(
        user_id=user.user_id,
        username=user.username,
        email=user.email,
        status=STATUS_OUT[user.status],
        create_time=ts_from_ms(user.create_ms),
        update_time=ts_from_ms(user.update_ms),
    )
    if user.last_login_ms is not None:
        message.last_login_time.FromMilliseconds(user.last_login_ms)
    return message


def decode_scopes(numbers: Iterable[user_pb2.Scope.ValueType], field: str = "scopes") -> frozenset[Scope]:
    """The scopes asked for; UNSPECIFIED or a number the proto does not define is INVALID_ARGUMENT."""
    scopes = set()
    for number in numbers:
        scope = SCOPE_IN.get(number)
        if scope is None:
            raise InvalidArgument(field, f"unknown scope {number}: use SCOPE_READ or SCOPE_TRADE")
        scopes.add(scope)
    return frozenset(scopes)


def encode_scopes(scopes: Iterable[Scope]) -> list[user_pb2.Scope.ValueType]:
    """Scopes for the wire, sorted (SCOPE_READ first)."""
    return sorted(SCOPE_OUT[s] for s in scopes)


def encode_api_key(key: ApiKey) -> user_pb2.ApiKey:
    """A key's public record for the wire (never the secret nor its hash)."""
    message = user_pb2.ApiKey(
        key_id=key.key_id,
        user_id=key.user_id,
        label=key.label,
        create_time=ts_from_ms(key.create_ms),
        scopes=encode_scopes(key.scopes),
    )
    if key.revoke_ms is not None:
        message.revoke_time.FromMilliseconds(key.revoke_ms)
    if key.last_used_ms is not None:
        message.last_used_time.FromMilliseconds(key.last_used_ms)
    if key.expire_ms is not None:
        message.expire_time.FromMilliseconds(key.expire_ms)
    return message


def decode_audit_kind(number: user_pb2.AuditEventKind.ValueType, field: str = "kind") -> AuditKind | None:
    """UNSPECIFIED gives None (every kind); a number the proto does not define is INVALID_ARGUMENT."""
    if number == user_pb2.AUDIT_EVENT_KIND_UNSPECIFIED:
        return None
    try:
        return AUDIT_KIND_IN[number]
    except KeyError:
        raise InvalidArgument(field, f"unknown audit event kind {number}") from None


def encode_audit_event(event: AuditEvent) -> user_pb2.AuditEvent:
    """An audit event for the wire."""
    return user_pb2.AuditEvent(
        event_id=str(event.event_id),
        kind=AUDIT_KIND_OUT[event.kind],
        event_time=ts_from_ms(event.event_ms),
        first_time=ts_from_ms(event.first),
        count=event.count,
        source=event.source,
        actor=event.actor.value,
        actor_key_id=event.actor_key_id,
        user_id=event.user_id,
        key_id=event.key_id,
        peer=event.peer,
        rpc=event.rpc,
        details=dict(event.details),
        source_event_id=event.source_event_id,
    )


def decode_recorded_events(messages: Iterable[user_pb2.AuditEvent]) -> list[AuditEvent]:
    """Events another service sends (RecordAuditEvents), checked field by field."""
    events = []
    for i, m in enumerate(messages):
        if i >= MAX_RECORDED_EVENTS:
            raise InvalidArgument("events", f"at most {MAX_RECORDED_EVENTS} events per call")
        field = f"events[{i}]"
        kind = decode_audit_kind(m.kind, f"{field}.kind")
        if kind not in audit.RECORDABLE_BY_SERVICES:
            allowed = ", ".join(sorted(f"AUDIT_EVENT_KIND_{k.value}" for k in audit.RECORDABLE_BY_SERVICES))
            raise InvalidArgument(f"{field}.kind", f"must be one of {allowed}")
        if m.source not in audit.SOURCES - {audit.USER_SERVICE}:
            raise InvalidArgument(f"{field}.source", "must be 'order_service' or 'exchange_gateway'")
        if not m.source_event_id or len(m.source_event_id) > audit.MAX_ID:
            raise InvalidArgument(f"{field}.source_event_id", f"is required, 1 to {audit.MAX_ID} characters")
        if not m.HasField("event_time"):
            raise InvalidArgument(f"{field}.event_time", "is required")
        try:
            actor = Role(m.actor)
        except ValueError:
            raise InvalidArgument(f"{field}.actor", "must be 'admin', 'service', 'user' or ''") from None
        event_ms = ms_from_ts(m.event_time)
        assert event_ms is not None
        events.append(
            AuditEvent(
                kind=kind,
                event_ms=event_ms,
                first_ms=ms_from_ts(m.first_time) if m.HasField("first_time") else None,
                source=m.source,
                actor=actor,
                actor_key_id=m.actor_key_id,
                user_id=m.user_id,
                key_id=m.key_id,
                peer=client_host(m.peer),
                rpc=m.rpc,
                details=dict(m.details),
                count=max(1, m.count),
                source_event_id=m.source_event_id,
            )
        )
    return events


def encode_balance(balance: Balance) -> user_pb2.Balance:
    """A balance for the wire; total = available + locked."""
    return user_pb2.Balance(
        asset=balance.asset,
        available=fmt(balance.available),
        locked=fmt(balance.locked),
        total=fmt(balance.total),
    )


def encode_entry(entry: LedgerEntry) -> user_pb2.LedgerEntry:
    """A ledger entry for the wire."""
    return user_pb2.LedgerEntry(
        entry_id=str(entry.entry_id),
        user_id=entry.user_id,
        asset=entry.asset,
        kind=KIND_OUT[entry.kind],
        available_delta=fmt(entry.available_delta),
        locked_delta=fmt(entry.locked_delta),
        available_after=fmt(entry.available_after),
        locked_after=fmt(entry.locked_after),
        reference=entry.reference,
        create_time=ts_from_ms(entry.create_ms),
    )


def encode_reservation(reservation: Reservation) -> user_service_pb2.Reservation:
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


def encode_house_balance(balance: HouseBalance) -> user_pb2.HouseBalance:
    """A house balance for the wire (signed)."""
    return user_pb2.HouseBalance(account=balance.account.value, asset=balance.asset, balance=fmt(balance.balance))


def encode_house_entry(entry: HouseEntry) -> user_pb2.HouseEntry:
    """A house entry for the wire."""
    return user_pb2.HouseEntry(
        entry_id=str(entry.entry_id),
        account=entry.account.value,
        asset=entry.asset,
        kind=HOUSE_KIND_OUT[entry.kind],
        amount=fmt(entry.amount),
        balance_after=fmt(entry.balance_after),
        reference=entry.reference,
        order_id=entry.order_id,
        create_time=ts_from_ms(entry.create_ms),
    )


def encode_totals(totals: AssetTotals) -> user_service_pb2.AssetTotals:
    """One asset's ledger totals for the wire."""
    return user_service_pb2.AssetTotals(
        asset=totals.asset,
        users_available=fmt(totals.users_available),
        users_locked=fmt(totals.users_locked),
        users_total=fmt(totals.users_total),
        house_total=fmt(totals.house_total),
        house_balances=[encode_house_balance(h) for h in totals.house],
    )
