"""Audit events: folded per group and window, bounded, and never holding a secret."""

from __future__ import annotations

from services.user_service.domain.audit import (
    MAX_VALUES_PER_DETAIL,
    OVERFLOW_PEER,
    Aggregator,
    AuditEvent,
    AuditKind,
    Role,
    sanitized,
)
from shared.logs import register_secret

FAILED = AuditKind.AUTHENTICATION_FAILED
DENIED = AuditKind.PERMISSION_DENIED


def failure(peer: str, at: int, **details: str) -> AuditEvent:
    return AuditEvent(FAILED, at, peer=peer, details=details)


def test_repeated_failures_from_one_address_are_one_event_per_window_counting_them() -> None:
    aggregator = Aggregator(window_ms=60_000)
    for i in range(500):
        aggregator.add(failure("203.0.113.7", 1_000 + i, reasons="unknown API key", key_id_prefixes=f"key_{i:010d}"))
    assert aggregator.closed(60_999) == []
    (event,) = aggregator.closed(61_000)
    assert (event.kind, event.peer, event.count, event.first, event.event_ms) == (
        FAILED,
        "203.0.113.7",
        500,
        1_000,
        1_499,
    )
    assert event.details["reasons"] == "unknown API key"
    prefixes = event.details["key_id_prefixes"].split(",")
    assert len(prefixes) == MAX_VALUES_PER_DETAIL + 1 and prefixes[-1] == "..."
    assert len(aggregator) == 0


def test_groups_are_apart_by_address_key_and_for_denials_by_rpc() -> None:
    aggregator = Aggregator()
    aggregator.add(failure("203.0.113.7", 1))
    aggregator.add(failure("198.51.100.1", 2))
    aggregator.add(AuditEvent(FAILED, 3, peer="203.0.113.7", key_id="key_01J9Z3ABCDEFGHJKMNPQRSTVWX"))
    aggregator.add(AuditEvent(DENIED, 4, actor=Role.USER, peer="203.0.113.7", rpc="PlaceOrder"))
    aggregator.add(AuditEvent(DENIED, 5, actor=Role.USER, peer="203.0.113.7", rpc="CancelOrder"))
    aggregator.add(AuditEvent(DENIED, 6, actor=Role.USER, peer="203.0.113.7", rpc="PlaceOrder"))
    events = sorted(aggregator.drain(), key=lambda e: e.first)
    assert [(e.kind, e.peer, e.rpc, e.count) for e in events] == [
        (FAILED, "203.0.113.7", "", 1),
        (FAILED, "198.51.100.1", "", 1),
        (FAILED, "203.0.113.7", "", 1),
        (DENIED, "203.0.113.7", "PlaceOrder", 2),
        (DENIED, "203.0.113.7", "CancelOrder", 1),
    ]


def test_beyond_the_open_groups_bound_new_groups_fold_into_one() -> None:
    aggregator = Aggregator(max_groups=10)
    for i in range(1_000):
        aggregator.add(failure(f"10.0.{i // 250}.{i % 250}", i))
    events = aggregator.drain()
    assert len(events) == 11
    (overflow,) = [e for e in events if e.peer == OVERFLOW_PEER]
    assert overflow.count == 990


def test_no_secret_survives_sanitizing() -> None:
    register_secret("adm-token-audit-unit-0001")
    api_key = "tk_01J9Z3ABCDEFGHJKMNPQRSTVWX_" + "s" * 43
    event = AuditEvent(
        AuditKind.API_KEY_CREATED,
        1,
        peer="ipv4:203.0.113.7:1",
        details={
            "label": f"my key {api_key}",
            "note": "Bearer adm-token-audit-unit-0001",
            "query": "signature=" + "ab" * 32,
            "free": "x" * 5_000,
        },
    )
    text = repr(sanitized(event))
    for secret in (api_key, "s" * 43, "adm-token-audit-unit-0001", "ab" * 32):
        assert secret not in text
    assert len(sanitized(event).details["free"]) == 512
