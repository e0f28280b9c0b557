"""API key scopes and expiry: what the admin and a user's own key may grant and revoke."""

from __future__ import annotations

import pytest

from services.user_service.domain.api_keys import (
    KeyWiderThanCaller,
    check_revoke,
    grant,
    normalize_scopes,
    scopes_from_text,
    scopes_text,
)
from services.user_service.domain.model import TRADE_SCOPES, ApiKey, Scope
from shared.errors import InvalidArgument

NOW = 1_700_000_000_000
READ = frozenset({Scope.READ})


def key(scopes: frozenset[Scope], expire_ms: int | None = None) -> ApiKey:
    return ApiKey(
        "key_01J9Z3ABCDEFGHJKMNPQRSTVWX", "usr_01J9Z3ABCDEFGHJKMNPQRSTVWX", "", "h", NOW, None, None, scopes, expire_ms
    )


def test_the_admin_makes_a_trade_key_by_default_and_any_scopes_asked() -> None:
    assert grant(frozenset(), None, NOW) == grant(frozenset({Scope.TRADE}), None, NOW)
    assert grant(frozenset(), None, NOW).scopes == TRADE_SCOPES
    assert grant(READ, NOW + 1, NOW).scopes == READ
    assert grant(READ, NOW + 1, NOW).expire_ms == NOW + 1


def test_every_key_can_read() -> None:
    assert normalize_scopes([Scope.TRADE]) == TRADE_SCOPES


def test_an_expiry_in_the_past_is_invalid_naming_expire_time() -> None:
    with pytest.raises(InvalidArgument) as bad:
        grant(frozenset(), NOW, NOW)
    assert bad.value.field == "expire_time"


def test_a_users_key_grants_its_own_scopes_by_default_and_never_more() -> None:
    assert grant(frozenset(), None, NOW, caller_scopes=READ).scopes == READ
    assert grant(READ, None, NOW, caller_scopes=TRADE_SCOPES).scopes == READ
    with pytest.raises(KeyWiderThanCaller) as wider:
        grant(frozenset({Scope.TRADE}), None, NOW, caller_scopes=READ)
    assert wider.value.reason == "KEY_WIDER_THAN_CALLER" and wider.value.metadata["field"] == "scopes"


def test_a_key_that_expires_passes_its_expiry_on_and_nothing_outlives_it() -> None:
    inherited = grant(frozenset(), None, NOW, caller_scopes=TRADE_SCOPES, caller_expire_ms=NOW + 60_000)
    assert inherited.expire_ms == NOW + 60_000
    sooner = grant(frozenset(), NOW + 1_000, NOW, caller_scopes=TRADE_SCOPES, caller_expire_ms=NOW + 60_000)
    assert sooner.expire_ms == NOW + 1_000
    with pytest.raises(KeyWiderThanCaller) as later:
        grant(frozenset(), NOW + 60_001, NOW, caller_scopes=TRADE_SCOPES, caller_expire_ms=NOW + 60_000)
    assert later.value.metadata["field"] == "expire_time"


def test_a_read_key_cannot_revoke_a_trade_key_but_a_trade_key_revokes_both() -> None:
    with pytest.raises(KeyWiderThanCaller):
        check_revoke(key(TRADE_SCOPES), READ)
    check_revoke(key(READ), READ)
    check_revoke(key(READ), TRADE_SCOPES)
    check_revoke(key(TRADE_SCOPES), TRADE_SCOPES)


def test_scopes_round_trip_through_storage_and_a_key_without_a_grant_is_a_trade_key() -> None:
    assert scopes_text(TRADE_SCOPES) == "READ,TRADE"
    assert scopes_from_text("READ") == READ
    assert scopes_from_text(None) == TRADE_SCOPES


def test_a_key_expires_at_its_expiry() -> None:
    assert not key(READ, NOW + 1).expired(NOW)
    assert key(READ, NOW + 1).expired(NOW + 1)
    assert not key(READ).expired(NOW * 10)
