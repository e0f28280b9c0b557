"""The order service's side of API keys: scopes checked per RPC, expiry bounding the cache, the client's
address passed along, and denials and admin actions recorded for the audit trail without any secret."""

from __future__ import annotations

import pytest

from services.order_service.api.auth import Authenticator
from services.order_service.domain.model import Caller, Scope, UserStatus
from shared.audit import AuditRecord
from shared.errors import PermissionDenied

from .fakes import FakeUsers

READ_KEY = "tk_01J9Z3ABCDEFGHJKMNPQRSTVW1_" + "r" * 43
TRADE_KEY = "tk_01J9Z3ABCDEFGHJKMNPQRSTVW2_" + "t" * 43
ADMIN_TOKEN = "admin-token-scopes-0001"
PEER = "ipv4:203.0.113.7:51234"


class Recorded:
    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def record(self, record: AuditRecord) -> None:
        self.records.append(record)


@pytest.fixture
def users() -> FakeUsers:
    users = FakeUsers()
    users.keys[READ_KEY] = Caller("usr_ann", UserStatus.ACTIVE, "key_read", frozenset({Scope.READ}))
    users.keys[TRADE_KEY] = Caller("usr_ann", UserStatus.ACTIVE, "key_trade")
    return users


async def test_a_read_key_reads_but_may_not_trade_and_the_denial_is_recorded(users: FakeUsers) -> None:
    audit = Recorded()
    auth = Authenticator(users, audit=audit, wall=lambda: 1_000)
    assert (await auth.authenticate(READ_KEY, scope=Scope.READ, peer=PEER, rpc="ListOrders")).user_id == "usr_ann"
    with pytest.raises(PermissionDenied) as denied:
        await auth.authenticate(READ_KEY, scope=Scope.TRADE, peer=PEER, rpc="PlaceOrder")
    assert denied.value.reason == "SCOPE_MISSING"
    assert "TRADE" in denied.value.message
    (record,) = audit.records
    assert (record.kind, record.actor, record.actor_key_id, record.user_id, record.peer, record.rpc) == (
        "PERMISSION_DENIED",
        "user",
        "key_read",
        "usr_ann",
        PEER,
        "PlaceOrder",
    )
    assert record.details["reasons"] == "SCOPE_MISSING"
    assert READ_KEY not in repr(record) and "r" * 43 not in repr(record)


async def test_a_trade_key_trades(users: FakeUsers) -> None:
    auth = Authenticator(users)
    assert (await auth.authenticate(TRADE_KEY, scope=Scope.TRADE, rpc="PlaceOrder")).key_id == "key_trade"


async def test_the_clients_address_goes_to_the_user_service(users: FakeUsers) -> None:
    auth = Authenticator(users)
    await auth.authenticate(TRADE_KEY, peer=PEER, rpc="GetOrder")
    assert users.peers == [PEER]


async def test_a_cached_key_is_not_trusted_beyond_its_expiry(users: FakeUsers) -> None:
    users.keys[TRADE_KEY] = Caller("usr_ann", UserStatus.ACTIVE, "key_trade", expire_ms=10_500)
    mono, wall = [0.0], [10_000]
    auth = Authenticator(users, ttl=2.0, clock=lambda: mono[0], wall=lambda: wall[0])
    await auth.authenticate(TRADE_KEY)
    mono[0], wall[0] = 0.4, 10_400
    await auth.authenticate(TRADE_KEY)
    assert users.calls["authenticate"] == 1  # cached: 0.5 s of the key's life were left
    mono[0], wall[0] = 0.6, 10_600
    await auth.authenticate(TRADE_KEY)
    assert users.calls["authenticate"] == 2  # asked again: the user service decides about an expired key


async def test_the_admin_token_on_a_user_rpc_and_a_wrong_admin_token_are_recorded_denials(users: FakeUsers) -> None:
    audit = Recorded()
    auth = Authenticator(users, reserved_tokens=(ADMIN_TOKEN,), admin_token=ADMIN_TOKEN, audit=audit)
    with pytest.raises(PermissionDenied):
        await auth.authenticate(ADMIN_TOKEN, peer=PEER, rpc="PlaceOrder")
    with pytest.raises(PermissionDenied):
        auth.require_admin("not-the-admin-token", peer=PEER, rpc="SetUserLimits")
    auth.require_admin(ADMIN_TOKEN, peer=PEER, rpc="SetUserLimits")
    assert [(r.kind, r.actor, r.details["reasons"], r.rpc) for r in audit.records] == [
        ("PERMISSION_DENIED", "admin", "NOT_A_USER", "PlaceOrder"),
        ("PERMISSION_DENIED", "", "ADMIN_ONLY", "SetUserLimits"),
    ]
    assert all(ADMIN_TOKEN not in repr(r) and "not-the-admin-token" not in repr(r) for r in audit.records)


async def test_an_admin_action_is_recorded(users: FakeUsers) -> None:
    audit = Recorded()
    auth = Authenticator(users, admin_token=ADMIN_TOKEN, audit=audit, wall=lambda: 5)
    auth.admin_action("SetUserLimits", {"user_id": "usr_ann", "max_open_orders": "3"}, peer=PEER)
    (record,) = audit.records
    assert (record.kind, record.actor, record.rpc, record.event_ms, dict(record.details)) == (
        "ADMIN_ACTION",
        "admin",
        "SetUserLimits",
        5,
        {"user_id": "usr_ann", "max_open_orders": "3"},
    )
