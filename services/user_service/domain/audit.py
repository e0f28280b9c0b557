"""The audit trail's records: what happened, who did it, from where. Pure data and rules, no I/O.

An ``AuditEvent`` never holds a secret: at most a key id (``key_...``), never a key, a token or a
signature. ``sanitized`` enforces it on every event before it is stored, whatever its origin: each
text goes through the log masker (which hides our keys, bearer tokens, signatures, registered
secrets and ``secret=...`` pairs) and is cut to its column's length.

Kinds an attacker can repeat at will (failed authentications, expired keys presented, permission
denials) are folded by the ``Aggregator``: one event per group (kind, source, who, which key, from
where, and the RPC for denials) and window, counting its occurrences, so that an attack costs the
store one row per address and window rather than one per attempt. An unknown key id is not part of
the group (the guesser chooses it); the first few are kept in the event's details.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import Enum

from services.user_service.domain.model import ApiKey, Scope, User, UserStatus
from shared.logs import mask
from shared.timeutil import iso_from_ms

USER_SERVICE = "user_service"
ORDER_SERVICE = "order_service"
EXCHANGE_GATEWAY = "exchange_gateway"
SOURCES = frozenset({USER_SERVICE, ORDER_SERVICE, EXCHANGE_GATEWAY})


class AuditKind(Enum):
    """What a security-relevant event was (the proto's AuditEventKind)."""

    USER_CREATED = "USER_CREATED"
    USER_STATUS_CHANGED = "USER_STATUS_CHANGED"
    API_KEY_CREATED = "API_KEY_CREATED"
    API_KEY_REVOKED = "API_KEY_REVOKED"
    EXPIRED_API_KEY_USED = "EXPIRED_API_KEY_USED"
    DEPOSIT = "DEPOSIT"
    WITHDRAWAL = "WITHDRAWAL"
    ADMIN_ACTION = "ADMIN_ACTION"
    AUTHENTICATION_FAILED = "AUTHENTICATION_FAILED"
    AUTHENTICATION_THROTTLED = "AUTHENTICATION_THROTTLED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    FOREIGN_ORDER = "FOREIGN_ORDER"
    RECONCILIATION_SHORTFALL = "RECONCILIATION_SHORTFALL"
    EXCHANGE_RATE_LIMITED = "EXCHANGE_RATE_LIMITED"


AGGREGATED = frozenset({AuditKind.AUTHENTICATION_FAILED, AuditKind.EXPIRED_API_KEY_USED, AuditKind.PERMISSION_DENIED})
"""Kinds folded into one event per group and window."""

RECORDABLE_BY_SERVICES = frozenset(
    {
        AuditKind.ADMIN_ACTION,
        AuditKind.PERMISSION_DENIED,
        AuditKind.FOREIGN_ORDER,
        AuditKind.RECONCILIATION_SHORTFALL,
        AuditKind.EXCHANGE_RATE_LIMITED,
    }
)
"""Kinds the other services may record (RecordAuditEvents); the rest only the user service sees."""

# Column lengths of the audit table (adapters/tables.py).
MAX_SHORT = 32
MAX_ID = 64
MAX_PEER = 128
MAX_DETAIL_NAME = 64
MAX_DETAIL_VALUE = 512
MAX_DETAILS = 32
MAX_VALUES_PER_DETAIL = 10
"""An aggregated event keeps at most this many distinct values of each detail (then "...")."""


class Role(Enum):
    """Who acted."""

    NONE = ""
    ADMIN = "admin"
    SERVICE = "service"
    USER = "user"


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller of a use case, as the audit trail and the key rules need it.

    For a user's key: its user, id, scopes and expiry. ``peer`` is the client's address (host only),
    ``rpc`` the method called.
    """

    role: Role = Role.NONE
    user_id: str = ""
    key_id: str = ""
    scopes: frozenset[Scope] = frozenset()
    expire_ms: int | None = None
    peer: str = ""
    rpc: str = ""

    @property
    def is_user(self) -> bool:
        """Whether a user's API key acts (as opposed to an operator token)."""
        return self.role is Role.USER


SYSTEM = Actor()
"""The service itself (tools, tests): no caller."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of the append-only security record (see the module docstring)."""

    kind: AuditKind
    event_ms: int
    source: str = USER_SERVICE
    actor: Role = Role.NONE
    actor_key_id: str = ""
    user_id: str = ""
    key_id: str = ""
    peer: str = ""
    rpc: str = ""
    details: Mapping[str, str] = field(default_factory=dict)
    count: int = 1
    first_ms: int | None = None
    """First occurrence of an aggregated event; None: the same as ``event_ms``."""
    source_event_id: str = ""
    """The sending service's id (RecordAuditEvents); '' for the user service's own events."""
    event_id: int | None = None
    """Assigned by storage, increasing in the order events were recorded."""

    @property
    def first(self) -> int:
        """When the first occurrence happened."""
        return self.event_ms if self.first_ms is None else self.first_ms


def by(actor: Actor, kind: AuditKind, now_ms: int, **fields: object) -> AuditEvent:
    """An event of ``kind`` that ``actor`` caused, with the actor's role, key, address and RPC."""
    return AuditEvent(
        kind=kind,
        event_ms=now_ms,
        actor=actor.role,
        actor_key_id=actor.key_id,
        peer=actor.peer,
        rpc=actor.rpc,
        **fields,  # type: ignore[arg-type]
    )


def user_created(user: User, actor: Actor, now_ms: int) -> AuditEvent:
    """A user was created."""
    return by(actor, AuditKind.USER_CREATED, now_ms, user_id=user.user_id, details={"username": user.username})


def status_changed(user_id: str, before: UserStatus, after: UserStatus, actor: Actor, now_ms: int) -> AuditEvent:
    """A user's status changed."""
    details = {"from": before.value, "to": after.value}
    return by(actor, AuditKind.USER_STATUS_CHANGED, now_ms, user_id=user_id, details=details)


def key_created(key: ApiKey, actor: Actor, now_ms: int) -> AuditEvent:
    """An API key was created (its id, scopes and expiry; never its secret)."""
    details = {"scopes": ",".join(sorted(s.value for s in key.scopes)), "label": key.label}
    if key.expire_ms is not None:
        details["expire_time"] = iso_from_ms(key.expire_ms)
    return by(actor, AuditKind.API_KEY_CREATED, now_ms, user_id=key.user_id, key_id=key.key_id, details=details)


def key_revoked(key: ApiKey, actor: Actor, now_ms: int) -> AuditEvent:
    """An API key was revoked."""
    return by(actor, AuditKind.API_KEY_REVOKED, now_ms, user_id=key.user_id, key_id=key.key_id)


def funds_moved(
    kind: AuditKind, actor: Actor, now_ms: int, *, user_id: str, asset: str, amount: str, request_id: str
) -> AuditEvent:
    """A deposit or a withdrawal was booked."""
    details = {"asset": asset, "amount": amount, "request_id": request_id}
    return by(actor, kind, now_ms, user_id=user_id, details=details)


def sanitized(event: AuditEvent) -> AuditEvent:
    """The event with every text masked (no secret can be stored) and cut to its column's length."""
    details: dict[str, str] = {}
    for name, value in list(event.details.items())[:MAX_DETAILS]:
        details[_clean(name, MAX_DETAIL_NAME)] = _clean(value, MAX_DETAIL_VALUE)
    return replace(
        event,
        source=_clean(event.source, MAX_SHORT),
        actor_key_id=_clean(event.actor_key_id, MAX_ID),
        user_id=_clean(event.user_id, MAX_ID),
        key_id=_clean(event.key_id, MAX_ID),
        peer=_clean(event.peer, MAX_PEER),
        rpc=_clean(event.rpc, MAX_ID),
        details=details,
        source_event_id=_clean(event.source_event_id, MAX_ID),
    )


def _clean(text: str, limit: int) -> str:
    return mask(str(text))[:limit]


def _group(event: AuditEvent) -> tuple[object, ...]:
    rpc = event.rpc if event.kind is AuditKind.PERMISSION_DENIED else ""
    return (event.kind, event.source, event.actor, event.actor_key_id, event.user_id, event.key_id, event.peer, rpc)


@dataclass(slots=True)
class _Window:
    first: AuditEvent
    start_ms: int
    last_ms: int
    count: int
    values: dict[str, dict[str, None]]  # detail name -> distinct values in order of arrival
    cut: set[str]  # details that had more distinct values than are kept


OVERFLOW_PEER = "*"
"""The address of the one group that takes every event once ``max_groups`` groups are open."""


class Aggregator:
    """Folds events of the ``AGGREGATED`` kinds into one per group and window.

    A group's window opens at its first event and closes ``window_ms`` later; ``closed`` hands out
    the groups whose window is over, ``drain`` all of them. Details are merged: each keeps its
    distinct values (comma-separated, at most ``MAX_VALUES_PER_DETAIL``, then "..."). Once ``max_groups`` are
    open, further new groups are folded into one group of peer ``*`` until windows close, so that
    memory and the store stay bounded however many addresses an attack uses.
    """

    def __init__(self, window_ms: int = 60_000, *, max_groups: int = 10_000):
        self.window_ms = window_ms
        self.max_groups = max_groups
        self._open: dict[tuple[object, ...], _Window] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, event: AuditEvent) -> None:
        """Count one occurrence (``event.count`` of them)."""
        group = _group(event)
        window = self._open.get(group)
        if window is None and len(self._open) >= self.max_groups:
            event = replace(event, actor_key_id="", user_id="", key_id="", peer=OVERFLOW_PEER, rpc="")
            group = _group(event)
            window = self._open.get(group)
        if window is None:
            window = _Window(event, event.first, event.event_ms, 0, {}, set())
            self._open[group] = window
        window.count += event.count
        window.start_ms = min(window.start_ms, event.first)
        window.last_ms = max(window.last_ms, event.event_ms)
        for name, value in event.details.items():
            values = window.values.setdefault(name, {})
            for part in value.split(",") if value else ():
                if part in values:
                    continue
                if len(values) < MAX_VALUES_PER_DETAIL:
                    values[part] = None
                else:
                    window.cut.add(name)

    def closed(self, now_ms: int) -> list[AuditEvent]:
        """Remove and return the groups whose window is over at ``now_ms``."""
        done = [g for g, w in self._open.items() if now_ms >= w.start_ms + self.window_ms]
        return [self._event(self._open.pop(g)) for g in done]

    def drain(self) -> list[AuditEvent]:
        """Remove and return every group, open or not."""
        events = [self._event(w) for w in self._open.values()]
        self._open.clear()
        return events

    @staticmethod
    def _event(window: _Window) -> AuditEvent:
        details = {}
        for name, values in window.values.items():
            details[name] = ",".join(values) + (",..." if name in window.cut else "")
        return replace(
            window.first, event_ms=window.last_ms, first_ms=window.start_ms, count=window.count, details=details
        )
