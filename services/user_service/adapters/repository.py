"""The ``Repository`` port over one SQLAlchemy connection inside an open transaction.

Statements are SQLAlchemy Core, built once from the table definitions. On the money path (every
reserve, release, settle, deposit and authentication) they are also compiled to SQL text once per
engine (``shared.db.Statement``) and run on the connection's own DBAPI cursor, inside the same
transaction: measured here, SQLAlchemy's per-call execution machinery cost about 0.1 ms per
statement, several times SQLite's own work, and one operation runs seven or eight statements (a
settlement with fees a few more: the house balances and entries it books). Decimals are written as
``shared.db.decimal_text``, the same canonical text as ``ExactDecimal``. The rarer list and admin
statements stay ordinary SQLAlchemy Core.

Concurrency on PostgreSQL (a repository made for a write transaction, ``writing=True``): reading a
user's balance first locks the user's row (``SELECT ... FOR UPDATE``), so every change to one user's
balances is serialised even across processes on one database, whatever rows exist yet; a
reservation is read FOR UPDATE; a house balance row is created at zero if missing and read FOR
UPDATE. On SQLite the write transaction's BEGIN IMMEDIATE already holds the one write lock and
``with_for_update()`` renders nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update

from services.user_service.adapters.tables import (
    api_key_grants,
    api_keys,
    audit_events,
    balances,
    house_balances,
    house_entries,
    idempotency_keys,
    ledger_entries,
    reservations,
    users,
)
from services.user_service.domain.api_keys import scopes_from_text, scopes_text
from services.user_service.domain.audit import AuditEvent, AuditKind, Role
from services.user_service.domain.model import (
    ApiKey,
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
from shared.db import POSTGRESQL, Cursor, Statement, decimal_text, upsert

_GET_USER = select(users).where(users.c.user_id == bindparam("user_id"))
_USERNAME_TAKEN = select(users.c.user_id).where(users.c.username == bindparam("username"))
_EMAIL_TAKEN = select(users.c.user_id).where(users.c.email == bindparam("email"))
_INSERT_USER = insert(users)
_UPDATE_STATUS = (
    update(users)
    .where(users.c.user_id == bindparam("b_user_id"))
    .values(status=bindparam("status"), update_ms=bindparam("update_ms"))
)
_TOUCH_USER = (
    update(users).where(users.c.user_id == bindparam("b_user_id")).values(last_login_ms=bindparam("last_login_ms"))
)

# A key with its grant (scopes, expiry); a key made before grants existed has none (NULLs).
_KEYS = select(*api_keys.c, api_key_grants.c.scopes, api_key_grants.c.expire_ms).select_from(
    api_keys.outerjoin(api_key_grants)
)
_GET_KEY = _KEYS.where(api_keys.c.key_id == bindparam("key_id"))
_LIST_KEYS = _KEYS.where(api_keys.c.user_id == bindparam("user_id")).order_by(api_keys.c.key_id)
_INSERT_KEY = insert(api_keys)
_INSERT_GRANT = insert(api_key_grants)
_REVOKE_KEY = (
    update(api_keys).where(api_keys.c.key_id == bindparam("b_key_id")).values(revoke_ms=bindparam("revoke_ms"))
)
_TOUCH_KEY = (
    update(api_keys).where(api_keys.c.key_id == bindparam("b_key_id")).values(last_used_ms=bindparam("last_used_ms"))
)

_GET_BALANCE = select(balances.c.available, balances.c.locked).where(
    balances.c.user_id == bindparam("user_id"), balances.c.asset == bindparam("asset")
)
_LIST_BALANCES = select(balances.c.asset, balances.c.available, balances.c.locked).where(
    balances.c.user_id == bindparam("user_id")
)
_UPSERT_BALANCE = upsert(balances, ["user_id", "asset"], ["available", "locked", "update_ms"])
_ENTRY_COLUMNS = [c.name for c in ledger_entries.columns if c.name != "entry_id"]
_INSERT_ENTRY = insert(ledger_entries)

_ALL_BALANCES = select(balances.c.user_id, balances.c.asset, balances.c.available, balances.c.locked)

_GET_HOUSE_BALANCE = select(house_balances.c.balance).where(
    house_balances.c.account == bindparam("account"), house_balances.c.asset == bindparam("asset")
)
_ALL_HOUSE_BALANCES = select(house_balances.c.account, house_balances.c.asset, house_balances.c.balance)
_UPSERT_HOUSE_BALANCE = upsert(house_balances, ["account", "asset"], ["balance", "update_ms"])
_HOUSE_BALANCE_COLUMNS = ["account", "asset", "balance", "update_ms"]
_ENSURE_HOUSE_BALANCE = upsert(house_balances, ["account", "asset"])
_HOUSE_ENTRY_COLUMNS = [c.name for c in house_entries.columns if c.name != "entry_id"]
_INSERT_HOUSE_ENTRY = insert(house_entries)

_GET_RESERVATION = select(
    reservations.c.order_id,
    reservations.c.user_id,
    reservations.c.asset,
    reservations.c.reserved,
    reservations.c.consumed,
    reservations.c.released,
).where(reservations.c.order_id == bindparam("order_id"))
_LIST_RESERVATIONS = (
    select(
        reservations.c.order_id,
        reservations.c.user_id,
        reservations.c.asset,
        reservations.c.reserved,
        reservations.c.consumed,
        reservations.c.released,
    )
    .where(reservations.c.order_id > bindparam("after"), reservations.c.order_id < bindparam("before"))
    .order_by(reservations.c.order_id)
    .limit(bindparam("limit"))
    .offset(bindparam("offset"))  # SQLite's LIMIT comes with an OFFSET: bound here, always 0
)
_UPSERT_RESERVATION = upsert(reservations, ["order_id"], ["consumed", "released", "update_ms"])

_GET_IDEMPOTENCY = select(idempotency_keys.c.fingerprint, idempotency_keys.c.result).where(
    idempotency_keys.c.scope == bindparam("scope"), idempotency_keys.c.key == bindparam("key")
)
_INSERT_IDEMPOTENCY = insert(idempotency_keys)

_AUDIT_COLUMNS = [c.name for c in audit_events.columns if c.name != "event_id"]
# An event another service sends again (a retry) is recorded once: (source, source_event_id) is unique.
_INSERT_AUDIT = upsert(audit_events, ["source", "source_event_id"])


_text = decimal_text


class _Sql:
    """The money-path statements, compiled once per engine (``Statement``)."""

    get_user = Statement(_GET_USER)
    lock_user = Statement(select(users.c.user_id).where(users.c.user_id == bindparam("user_id")).with_for_update())
    get_key = Statement(_GET_KEY)
    touch_key = Statement(_TOUCH_KEY)
    touch_user = Statement(_TOUCH_USER)
    get_balance = Statement(_GET_BALANCE)
    get_balance_locked = Statement(_GET_BALANCE.with_for_update())
    upsert_balance = Statement(_UPSERT_BALANCE, ["user_id", "asset", "available", "locked", "update_ms"])
    insert_entry = Statement(_INSERT_ENTRY, _ENTRY_COLUMNS)
    get_house_balance = Statement(_GET_HOUSE_BALANCE)
    get_house_balance_locked = Statement(_GET_HOUSE_BALANCE.with_for_update())
    ensure_house_balance = Statement(_ENSURE_HOUSE_BALANCE, _HOUSE_BALANCE_COLUMNS)
    upsert_house_balance = Statement(_UPSERT_HOUSE_BALANCE, _HOUSE_BALANCE_COLUMNS)
    insert_house_entry = Statement(_INSERT_HOUSE_ENTRY, _HOUSE_ENTRY_COLUMNS)
    get_reservation = Statement(_GET_RESERVATION)
    get_reservation_locked = Statement(_GET_RESERVATION.with_for_update())
    list_reservations = Statement(_LIST_RESERVATIONS)
    upsert_reservation = Statement(
        _UPSERT_RESERVATION,
        ["order_id", "user_id", "asset", "reserved", "consumed", "released", "create_ms", "update_ms"],
    )
    get_idempotency = Statement(_GET_IDEMPOTENCY)
    insert_idempotency = Statement(_INSERT_IDEMPOTENCY, ["scope", "key", "fingerprint", "result", "create_ms"])
    insert_audit = Statement(_INSERT_AUDIT, _AUDIT_COLUMNS)


def _user(row: Any) -> User:
    # Column order of the users table (SELECT users.* is what _GET_USER compiles to).
    return User(row[0], row[1], row[2], UserStatus(row[3]), row[4], row[5], row[6])


def _key(row: Any) -> ApiKey:
    # The api_keys columns in table order, then the grant's scopes and expiry (see _KEYS).
    return ApiKey(row[0], row[1], row[2], row[3], row[4], row[5], row[6], scopes_from_text(row[7]), row[8])


def _audit_event(row: Row[Any]) -> AuditEvent:
    m = row._mapping
    return AuditEvent(
        kind=AuditKind(m["kind"]),
        event_ms=m["event_ms"],
        source=m["source"],
        actor=Role(m["actor"]),
        actor_key_id=m["actor_key_id"],
        user_id=m["user_id"],
        key_id=m["key_id"],
        peer=m["peer"],
        rpc=m["rpc"],
        details=json.loads(m["details"]),
        count=m["occurrences"],
        first_ms=m["first_ms"],
        source_event_id=m["source_event_id"] or "",
        event_id=m["event_id"],
    )


def _entry(row: Row[Any]) -> LedgerEntry:
    m = row._mapping
    return LedgerEntry(
        entry_id=m["entry_id"],
        user_id=m["user_id"],
        asset=m["asset"],
        kind=EntryKind(m["kind"]),
        available_delta=m["available_delta"],
        locked_delta=m["locked_delta"],
        available_after=m["available_after"],
        locked_after=m["locked_after"],
        reference=m["reference"],
        order_id=m["order_id"],
        create_ms=m["create_ms"],
    )


def _house_entry(row: Row[Any]) -> HouseEntry:
    m = row._mapping
    return HouseEntry(
        entry_id=m["entry_id"],
        account=HouseAccount(m["account"]),
        asset=m["asset"],
        kind=HouseEntryKind(m["kind"]),
        amount=m["amount"],
        balance_after=m["balance_after"],
        reference=m["reference"],
        order_id=m["order_id"],
        create_ms=m["create_ms"],
    )


class SqlRepository:
    """Implements ``service.ports.Repository`` over a connection with an open transaction."""

    def __init__(self, conn: Connection, *, writing: bool = False):
        self.conn = conn
        self.cursor = Cursor(conn)
        self._sql = _Sql
        # Row locks where the engine has them (PostgreSQL): see the module docstring.
        self._locking = writing and conn.dialect.name == POSTGRESQL

    def _one(self, statement: Statement, params: dict[str, Any]) -> Any:
        return self.cursor.one(statement, params)

    # --- users --------------------------------------------------------------------------------

    def get_user(self, user_id: str) -> User | None:
        row = self._one(self._sql.get_user, {"user_id": user_id})
        return None if row is None else _user(row)

    def username_taken(self, username: str) -> bool:
        return self.conn.execute(_USERNAME_TAKEN, {"username": username}).first() is not None

    def email_taken(self, email: str) -> bool:
        return self.conn.execute(_EMAIL_TAKEN, {"email": email}).first() is not None

    def insert_user(self, user: User) -> None:
        self.conn.execute(
            _INSERT_USER,
            {
                "user_id": user.user_id,
                "username": user.username,
                "email": user.email,
                "status": user.status.value,
                "create_ms": user.create_ms,
                "update_ms": user.update_ms,
                "last_login_ms": user.last_login_ms,
            },
        )

    def update_user_status(self, user_id: str, status: UserStatus, now_ms: int) -> None:
        self.conn.execute(_UPDATE_STATUS, {"b_user_id": user_id, "status": status.value, "update_ms": now_ms})

    def list_users(self, status: UserStatus | None, after_user_id: str | None, limit: int) -> list[User]:
        query = select(users).order_by(users.c.user_id).limit(limit)
        if status is not None:
            query = query.where(users.c.status == status.value)
        if after_user_id is not None:
            query = query.where(users.c.user_id > after_user_id)
        return [_user(row) for row in self.conn.execute(query)]

    # --- API keys -----------------------------------------------------------------------------

    def insert_api_key(self, key: ApiKey) -> None:
        self.conn.execute(
            _INSERT_KEY,
            {
                "key_id": key.key_id,
                "user_id": key.user_id,
                "label": key.label,
                "secret_sha256": key.secret_hash,
                "create_ms": key.create_ms,
                "revoke_ms": key.revoke_ms,
                "last_used_ms": key.last_used_ms,
            },
        )
        self.conn.execute(
            _INSERT_GRANT, {"key_id": key.key_id, "scopes": scopes_text(key.scopes), "expire_ms": key.expire_ms}
        )

    def get_api_key(self, key_id: str) -> ApiKey | None:
        row = self._one(self._sql.get_key, {"key_id": key_id})
        return None if row is None else _key(row)

    def list_api_keys(self, user_id: str) -> list[ApiKey]:
        return [_key(row) for row in self.conn.execute(_LIST_KEYS, {"user_id": user_id})]

    def revoke_api_key(self, key_id: str, now_ms: int) -> None:
        self.conn.execute(_REVOKE_KEY, {"b_key_id": key_id, "revoke_ms": now_ms})

    def touch_login(self, key_id: str, user_id: str, now_ms: int) -> None:
        self.cursor.execute(self._sql.touch_key, {"b_key_id": key_id, "last_used_ms": now_ms})
        self.cursor.execute(self._sql.touch_user, {"b_user_id": user_id, "last_login_ms": now_ms})

    # --- balances and the ledger --------------------------------------------------------------

    def get_balance(self, user_id: str, asset: str) -> Balance | None:
        if self._locking:
            self._one(self._sql.lock_user, {"user_id": user_id})
            row = self._one(self._sql.get_balance_locked, {"user_id": user_id, "asset": asset})
        else:
            row = self._one(self._sql.get_balance, {"user_id": user_id, "asset": asset})
        return None if row is None else Balance(user_id, asset, Decimal(row[0]), Decimal(row[1]))

    def list_balances(self, user_id: str) -> list[Balance]:
        return [Balance(user_id, r[0], r[1], r[2]) for r in self.conn.execute(_LIST_BALANCES, {"user_id": user_id})]

    def save_balances(self, items: Iterable[Balance], now_ms: int) -> None:
        self.cursor.many(
            self._sql.upsert_balance,
            [
                {
                    "user_id": b.user_id,
                    "asset": b.asset,
                    "available": _text(b.available),
                    "locked": _text(b.locked),
                    "update_ms": now_ms,
                }
                for b in items
            ],
        )

    def append_entries(self, entries: list[LedgerEntry]) -> None:
        self.cursor.many(
            self._sql.insert_entry,
            [
                {
                    "user_id": e.user_id,
                    "asset": e.asset,
                    "kind": e.kind.value,
                    "available_delta": _text(e.available_delta),
                    "locked_delta": _text(e.locked_delta),
                    "available_after": _text(e.available_after),
                    "locked_after": _text(e.locked_after),
                    "reference": e.reference,
                    "order_id": e.order_id,
                    "create_ms": e.create_ms,
                }
                for e in entries
            ],
        )

    def list_entries(self, user_id: str, asset: str | None, before_id: int | None, limit: int) -> list[LedgerEntry]:
        query = (
            select(ledger_entries)
            .where(ledger_entries.c.user_id == user_id)
            .order_by(ledger_entries.c.entry_id.desc())
            .limit(limit)
        )
        if asset is not None:
            query = query.where(ledger_entries.c.asset == asset)
        if before_id is not None:
            query = query.where(ledger_entries.c.entry_id < before_id)
        return [_entry(row) for row in self.conn.execute(query)]

    def all_balances(self) -> Iterator[Balance]:
        for row in self.conn.execute(_ALL_BALANCES):
            yield Balance(row[0], row[1], row[2], row[3])

    # --- house accounts -----------------------------------------------------------------------

    def get_house_balance(self, account: HouseAccount, asset: str) -> HouseBalance | None:
        key = {"account": account.value, "asset": asset}
        if self._locking:
            # A row to lock even before the house's first entry in this asset (it stays at zero).
            self.cursor.execute(self._sql.ensure_house_balance, {**key, "balance": _text(Decimal(0)), "update_ms": 0})
            row = self._one(self._sql.get_house_balance_locked, key)
        else:
            row = self._one(self._sql.get_house_balance, key)
        return None if row is None else HouseBalance(account, asset, Decimal(row[0]))

    def list_house_balances(self) -> list[HouseBalance]:
        return [HouseBalance(HouseAccount(r[0]), r[1], r[2]) for r in self.conn.execute(_ALL_HOUSE_BALANCES)]

    def save_house_balances(self, items: Iterable[HouseBalance], now_ms: int) -> None:
        self.cursor.many(
            self._sql.upsert_house_balance,
            [
                {"account": h.account.value, "asset": h.asset, "balance": _text(h.balance), "update_ms": now_ms}
                for h in items
            ],
        )

    def append_house_entries(self, entries: list[HouseEntry]) -> None:
        self.cursor.many(
            self._sql.insert_house_entry,
            [
                {
                    "account": e.account.value,
                    "asset": e.asset,
                    "kind": e.kind.value,
                    "amount": _text(e.amount),
                    "balance_after": _text(e.balance_after),
                    "reference": e.reference,
                    "order_id": e.order_id,
                    "create_ms": e.create_ms,
                }
                for e in entries
            ],
        )

    def list_house_entries(
        self, account: HouseAccount | None, asset: str | None, before_id: int | None, limit: int
    ) -> list[HouseEntry]:
        query = select(house_entries).order_by(house_entries.c.entry_id.desc()).limit(limit)
        if account is not None:
            query = query.where(house_entries.c.account == account.value)
        if asset is not None:
            query = query.where(house_entries.c.asset == asset)
        if before_id is not None:
            query = query.where(house_entries.c.entry_id < before_id)
        return [_house_entry(row) for row in self.conn.execute(query)]

    # --- reservations and idempotency ---------------------------------------------------------

    def get_reservation(self, order_id: str) -> Reservation | None:
        statement = self._sql.get_reservation_locked if self._locking else self._sql.get_reservation
        row = self._one(statement, {"order_id": order_id})
        if row is None:
            return None
        return Reservation(row[0], row[1], row[2], Decimal(row[3]), Decimal(row[4]), Decimal(row[5]))

    def list_reservations(self, after: str, before: str, limit: int) -> list[Reservation]:
        rows = self.cursor.all(
            self._sql.list_reservations, {"after": after, "before": before, "limit": limit, "offset": 0}
        )
        return [Reservation(r[0], r[1], r[2], Decimal(r[3]), Decimal(r[4]), Decimal(r[5])) for r in rows]

    def save_reservation(self, reservation: Reservation, now_ms: int) -> None:
        self.cursor.execute(
            self._sql.upsert_reservation,
            {
                "order_id": reservation.order_id,
                "user_id": reservation.user_id,
                "asset": reservation.asset,
                "reserved": _text(reservation.reserved),
                "consumed": _text(reservation.consumed),
                "released": _text(reservation.released),
                "create_ms": now_ms,
                "update_ms": now_ms,
            },
        )

    def get_idempotency(self, scope: str, key: str) -> tuple[str, str] | None:
        row = self._one(self._sql.get_idempotency, {"scope": scope, "key": key})
        return None if row is None else (row[0], row[1])

    def put_idempotency(self, scope: str, key: str, fingerprint: str, result: str, now_ms: int) -> None:
        self.cursor.execute(
            self._sql.insert_idempotency,
            {"scope": scope, "key": key, "fingerprint": fingerprint, "result": result, "create_ms": now_ms},
        )

    # --- the audit trail ------------------------------------------------------------------------

    def append_audit(self, events: Iterable[AuditEvent], now_ms: int) -> int:
        written = 0
        for e in events:
            cursor = self.cursor.execute(
                self._sql.insert_audit,
                {
                    "kind": e.kind.value,
                    "event_ms": e.event_ms,
                    "first_ms": e.first,
                    "occurrences": e.count,
                    "source": e.source,
                    "actor": e.actor.value,
                    "actor_key_id": e.actor_key_id,
                    "user_id": e.user_id,
                    "key_id": e.key_id,
                    "peer": e.peer,
                    "rpc": e.rpc,
                    "details": json.dumps(dict(e.details), sort_keys=True, ensure_ascii=False),
                    "source_event_id": e.source_event_id or None,
                    "record_ms": now_ms,
                },
            )
            written += max(cursor.rowcount, 0)
        return written

    def list_audit(
        self,
        *,
        user_id: str | None,
        kind: AuditKind | None,
        start_ms: int | None,
        end_ms: int | None,
        before_id: int | None,
        limit: int,
    ) -> list[AuditEvent]:
        query = select(audit_events).order_by(audit_events.c.event_id.desc()).limit(limit)
        if user_id is not None:
            query = query.where(audit_events.c.user_id == user_id)
        if kind is not None:
            query = query.where(audit_events.c.kind == kind.value)
        if start_ms is not None:
            query = query.where(audit_events.c.event_ms >= start_ms)
        if end_ms is not None:
            query = query.where(audit_events.c.event_ms < end_ms)
        if before_id is not None:
            query = query.where(audit_events.c.event_id < before_id)
        return [_audit_event(row) for row in self.conn.execute(query)]
