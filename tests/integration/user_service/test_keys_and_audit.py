"""API keys with scopes and expiry, throttled guessing and the audit trail, through a real gRPC client.

The service runs with low throttle limits (slower answers after 2 failures, refused after 5) so that
a burst is short. Aggregated events (failures, denials, expired keys) are written when their window
closes; the tests close it with ``audit.flush()`` rather than wait a minute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from services.user_service.adapters import tables
from services.user_service.bootstrap import RunningService, start
from services.user_service.domain import api_keys
from services.user_service.domain.api_keys import Grant
from services.user_service.domain.model import TRADE_SCOPES
from services.user_service.service import accounts
from tests.integration.user_service.conftest import make_config
from tests.integration.user_service.helpers import (
    ADMIN,
    ADMIN_TOKEN,
    SERVICE,
    SERVICE_TOKEN,
    Client,
    bearer,
    error_info,
    rich_status,
)
from tests.support import assert_no_secret
from trading.user.v1 import user_pb2
from trading.user.v1 import user_service_pb2 as pb

READ, TRADE = user_pb2.SCOPE_READ, user_pb2.SCOPE_TRADE
K = user_pb2.AuditEventKind
ATTACKER = "ipv4:203.0.113.7:40000"
SOMEONE_ELSE = "ipv4:198.51.100.1:40001"


@pytest.fixture
async def service(db_path: Path) -> AsyncIterator[RunningService]:
    running = await start(replace(make_config(db_path), auth_slow_after=2, auth_ban_after=5, auth_ban_seconds=60))
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


def wrong_key(i: int) -> str:
    return f"tk_01J9Z3ABCDEFGHJKMNPQRS{i:04d}_" + "x" * 43


def in_a_minute() -> Timestamp:
    return Timestamp(seconds=int(time.time()) + 60)


def new_key(client: Client, metadata: Any, user_id: str = "", **fields: Any) -> Any:
    """The CreateApiKey call (await it for the response)."""
    return client.stub.CreateApiKey(pb.CreateApiKeyRequest(user_id=user_id, **fields), metadata=metadata)


async def audit(client: Client, **filters: Any) -> list[user_pb2.AuditEvent]:
    """Every audit event the filters select, newest first, following the pages; open windows written first."""
    assert client.service is not None
    await client.service.audit.flush()  # type: ignore[union-attr]
    out: list[user_pb2.AuditEvent] = []
    token = ""
    while True:
        page = await client.stub.ListAuditEvents(pb.ListAuditEventsRequest(page_token=token, **filters), metadata=ADMIN)
        out.extend(page.events)
        token = page.next_page_token
        if not token:
            return out


def retry_after(status: Any) -> float | None:
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def insert_key(service: RunningService, user_id: str, grant: Grant | None) -> str:
    """Store a key directly (an expired one, or one from before scopes without a grant row); return it."""
    issued = api_keys.issue()
    now = int(time.time() * 1000)

    def write(repo: Any) -> None:
        if grant is not None:
            accounts.create_api_key(repo, user_id, "direct", issued, now, grant=grant)
        else:
            repo.conn.execute(
                tables.api_keys.insert(),
                {
                    "key_id": issued.key_id,
                    "user_id": user_id,
                    "label": "before scopes",
                    "secret_sha256": issued.secret_hash,
                    "create_ms": now,
                },
            )

    service.transactions.write_sync(write)
    return issued.api_key


async def test_a_users_trade_key_creates_a_read_key_for_itself_and_lists_it(client: Client) -> None:
    ann = await client.new_user("ann")
    trade = await new_key(client, ADMIN, ann, label="bot")
    assert list(trade.key.scopes) == [READ, TRADE] and not trade.key.HasField("expire_time")
    read = await new_key(client, bearer(trade.api_key), label="dashboard", scopes=[READ], expire_time=in_a_minute())
    assert read.key.user_id == ann and list(read.key.scopes) == [READ] and read.key.HasField("expire_time")
    listed = await client.stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=bearer(read.api_key))
    assert [(k.key_id, list(k.scopes)) for k in listed.keys] == [(trade.key_id, [READ, TRADE]), (read.key_id, [READ])]
    # The new key works, and only for ann.
    me = await client.stub.GetUser(pb.GetUserRequest(), metadata=bearer(read.api_key))
    assert me.user.user_id == ann


async def test_a_read_key_cannot_create_a_trade_key_and_no_key_creates_one_that_outlives_it(client: Client) -> None:
    ann = await client.new_user("ann")
    read = await new_key(client, ADMIN, ann, scopes=[READ])
    code, status = await rich_status(new_key(client, bearer(read.api_key), scopes=[TRADE]))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(status)
    assert info is not None and (info.reason, info.metadata["field"]) == ("KEY_WIDER_THAN_CALLER", "scopes")
    # Empty scopes from a read key: a read key.
    inherited = await new_key(client, bearer(read.api_key))
    assert list(inherited.key.scopes) == [READ]

    expiring = await new_key(client, ADMIN, ann, expire_time=in_a_minute())
    child = await new_key(client, bearer(expiring.api_key), scopes=[READ])
    assert child.key.expire_time == expiring.key.expire_time
    later = Timestamp(seconds=expiring.key.expire_time.seconds + 3600)
    code, status = await rich_status(new_key(client, bearer(expiring.api_key), expire_time=later))
    assert code == grpc.StatusCode.PERMISSION_DENIED and error_info(status).metadata["field"] == "expire_time"

    denied = await audit(client, kind=K.Value("AUDIT_EVENT_KIND_PERMISSION_DENIED"))
    assert {(e.actor, e.rpc, e.details["reasons"], e.user_id) for e in denied} == {
        ("user", "CreateApiKey", "KEY_WIDER_THAN_CALLER", ann)
    }
    assert sum(e.count for e in denied) == 2


async def test_a_key_revokes_its_users_keys_no_wider_than_itself_and_never_another_users(client: Client) -> None:
    ann, bob = await client.new_user("ann"), await client.new_user("bob")
    ann_trade = await new_key(client, ADMIN, ann)
    ann_read = await new_key(client, ADMIN, ann, scopes=[READ])
    bob_key = await new_key(client, ADMIN, bob)

    code, status = await rich_status(
        client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=ann_trade.key_id), metadata=bearer(ann_read.api_key))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and error_info(status).reason == "KEY_WIDER_THAN_CALLER"
    code, status = await rich_status(
        client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=bob_key.key_id), metadata=bearer(ann_trade.api_key))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED and error_info(status).reason == "NOT_OWNER"

    revoked = await client.stub.RevokeApiKey(
        pb.RevokeApiKeyRequest(key_id=ann_read.key_id), metadata=bearer(ann_trade.api_key)
    )
    assert revoked.key.HasField("revoke_time")
    code, _ = await rich_status(client.stub.GetUser(pb.GetUserRequest(), metadata=bearer(ann_read.api_key)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    # A key may revoke itself.
    await client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=ann_trade.key_id), metadata=bearer(ann_trade.api_key))
    keys = await client.stub.ListApiKeys(pb.ListApiKeysRequest(user_id=ann), metadata=ADMIN)
    assert all(k.HasField("revoke_time") for k in keys.keys)
    bob_keys = await client.stub.ListApiKeys(pb.ListApiKeysRequest(user_id=bob), metadata=ADMIN)
    assert not bob_keys.keys[0].HasField("revoke_time")


async def test_an_expired_key_is_told_it_expired_but_a_wrong_secret_for_it_is_not(client: Client) -> None:
    ann = await client.new_user("ann")
    assert client.service is not None
    expired = insert_key(client.service, ann, Grant(TRADE_SCOPES, int(time.time() * 1000) - 1000))
    for call in (
        client.stub.GetBalances(pb.GetBalancesRequest(), metadata=bearer(expired)),
        client.stub.AuthenticateApiKey(
            pb.AuthenticateApiKeyRequest(api_key=expired, client_peer="ipv4:127.0.0.1:5000"), metadata=SERVICE
        ),
    ):
        code, status = await rich_status(call)
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "expired" in status.message and error_info(status).reason == "API_KEY_EXPIRED"
    guess = expired[:-43] + "y" * 43
    code, status = await rich_status(client.stub.GetBalances(pb.GetBalancesRequest(), metadata=bearer(guess)))
    assert code == grpc.StatusCode.UNAUTHENTICATED and "expired" not in status.message

    (used,) = await audit(client, kind=K.Value("AUDIT_EVENT_KIND_EXPIRED_API_KEY_USED"))
    assert (used.user_id, used.count, used.peer) == (ann, 2, "127.0.0.1")
    assert set(used.details["rpcs"].split(",")) == {"GetBalances", "AuthenticateApiKey"}
    assert expired.split("_")[1] in used.key_id


async def test_authenticate_api_key_answers_scopes_and_expiry_and_a_key_from_before_scopes_trades(
    client: Client,
) -> None:
    ann = await client.new_user("ann")
    read = await new_key(client, ADMIN, ann, scopes=[READ], expire_time=in_a_minute())
    answer = await client.stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(api_key=read.api_key), metadata=SERVICE)
    assert (answer.key_id, list(answer.scopes), answer.expire_time) == (read.key_id, [READ], read.key.expire_time)
    assert client.service is not None
    old = insert_key(client.service, ann, None)
    answer = await client.stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(api_key=old), metadata=SERVICE)
    assert list(answer.scopes) == [READ, TRADE] and not answer.HasField("expire_time")


async def test_a_burst_of_wrong_keys_from_one_client_is_refused_and_recorded_once_while_others_succeed(
    client: Client,
) -> None:
    ann = await client.new_user("ann")
    good = await new_key(client, ADMIN, ann)
    codes = []
    refused_for = []
    for i in range(12):
        request = pb.AuthenticateApiKeyRequest(api_key=wrong_key(i), client_peer=ATTACKER)
        code, status = await rich_status(client.stub.AuthenticateApiKey(request, metadata=SERVICE))
        codes.append(code)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            refused_for.append(retry_after(status))
            assert error_info(status).reason == "AUTHENTICATION_THROTTLED"
        # Someone else, through the same service, is unaffected.
        other = pb.AuthenticateApiKeyRequest(api_key=good.api_key, client_peer=SOMEONE_ELSE)
        assert (await client.stub.AuthenticateApiKey(other, metadata=SERVICE)).user.user_id == ann
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 7
    assert all(r is not None and 0 < r <= 60 for r in refused_for)
    # Even the right key is refused from the refused address.
    right = pb.AuthenticateApiKeyRequest(api_key=good.api_key, client_peer=ATTACKER)
    assert (await rich_status(client.stub.AuthenticateApiKey(right, metadata=SERVICE)))[0] == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )

    failed = await audit(client, kind=K.Value("AUDIT_EVENT_KIND_AUTHENTICATION_FAILED"))
    (event,) = failed
    assert (event.peer, event.count, event.details["rpcs"], event.actor) == ("203.0.113.7", 5, "AuthenticateApiKey", "")
    assert event.details["reasons"] == "unknown API key"
    (throttled,) = await audit(client, kind=K.Value("AUDIT_EVENT_KIND_AUTHENTICATION_THROTTLED"))
    assert (throttled.peer, throttled.details["trigger"], throttled.details["failures"]) == (
        "203.0.113.7",
        "address",
        "5",
    )


async def test_the_services_own_callers_are_throttled_by_address_but_the_operator_tokens_still_work(
    client: Client,
) -> None:
    ann = await client.new_user("ann")
    good = await new_key(client, ADMIN, ann)
    for token in ("wrong-token-0000000001", "wrong-token-0000000002", wrong_key(1), wrong_key(2), wrong_key(3)):
        code, _ = await rich_status(client.stub.GetBalances(pb.GetBalancesRequest(), metadata=bearer(token)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    code, status = await rich_status(client.stub.GetBalances(pb.GetBalancesRequest(), metadata=bearer(good.api_key)))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and retry_after(status)
    assert (await client.stub.GetUser(pb.GetUserRequest(user_id=ann), metadata=ADMIN)).user.user_id == ann
    assert (await client.stub.GetUser(pb.GetUserRequest(user_id=ann), metadata=SERVICE)).user.user_id == ann
    (event,) = await audit(client, kind=K.Value("AUDIT_EVENT_KIND_AUTHENTICATION_FAILED"))
    assert (event.peer, event.count) == ("127.0.0.1", 5)
    assert set(event.details["reasons"].split(",")) == {"unknown token", "unknown API key"}


async def test_a_guess_at_one_key_from_many_addresses_refuses_them_but_not_its_owner(client: Client) -> None:
    ann = await client.new_user("ann")
    target = await new_key(client, ADMIN, ann)
    guess = target.api_key[:-43] + "g" * 43
    for i in range(6):
        request = pb.AuthenticateApiKeyRequest(api_key=guess, client_peer=f"ipv4:192.0.2.{i}:1000")
        await rich_status(client.stub.AuthenticateApiKey(request, metadata=SERVICE))
    again = pb.AuthenticateApiKeyRequest(api_key=guess, client_peer="ipv4:192.0.2.5:1001")
    assert (await rich_status(client.stub.AuthenticateApiKey(again, metadata=SERVICE)))[0] == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    owner = pb.AuthenticateApiKeyRequest(api_key=target.api_key, client_peer="ipv4:198.51.100.9:1000")
    assert (await client.stub.AuthenticateApiKey(owner, metadata=SERVICE)).key_id == target.key_id
    throttled = await audit(client, kind=K.Value("AUDIT_EVENT_KIND_AUTHENTICATION_THROTTLED"))
    assert {e.details["trigger"] for e in throttled} == {"key"}
    assert all(e.key_id == target.key_id for e in throttled)


async def test_each_change_is_recorded_once_with_who_did_it_and_the_list_filters_and_pages(client: Client) -> None:
    started = Timestamp(seconds=int(time.time()) - 1)
    ann, bob = await client.new_user("ann"), await client.new_user("bob")
    await client.stub.UpdateUserStatus(
        pb.UpdateUserStatusRequest(user_id=ann, status=user_pb2.USER_STATUS_SUSPENDED), metadata=ADMIN
    )
    await client.stub.UpdateUserStatus(  # unchanged: nothing to record
        pb.UpdateUserStatusRequest(user_id=ann, status=user_pb2.USER_STATUS_SUSPENDED), metadata=ADMIN
    )
    key = await new_key(client, ADMIN, ann, label="bot", scopes=[READ])
    await client.deposit(ann, "USDT", "100", "dep-1")
    await client.deposit(ann, "USDT", "100", "dep-1")  # a replay: credited once, recorded once
    await client.stub.Withdraw(
        pb.WithdrawRequest(user_id=ann, asset="USDT", amount="40", request_id="wd-1"), metadata=ADMIN
    )
    await client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=key.key_id), metadata=bearer(key.api_key))
    await client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=key.key_id), metadata=ADMIN)  # already revoked

    mine = await audit(client, user_id=ann)
    kinds = [K.Name(e.kind).removeprefix("AUDIT_EVENT_KIND_") for e in reversed(mine)]
    assert kinds == [
        "USER_CREATED",
        "USER_STATUS_CHANGED",
        "API_KEY_CREATED",
        "DEPOSIT",
        "WITHDRAWAL",
        "API_KEY_REVOKED",
    ]
    by_kind = {K.Name(e.kind).removeprefix("AUDIT_EVENT_KIND_"): e for e in mine}
    assert dict(by_kind["USER_STATUS_CHANGED"].details) == {"from": "ACTIVE", "to": "SUSPENDED"}
    assert by_kind["API_KEY_CREATED"].key_id == key.key_id
    assert dict(by_kind["API_KEY_CREATED"].details) == {"scopes": "READ", "label": "bot"}
    assert dict(by_kind["DEPOSIT"].details) == {"asset": "USDT", "amount": "100.00000000", "request_id": "dep-1"}
    assert by_kind["DEPOSIT"].actor == "admin" and by_kind["DEPOSIT"].peer == "127.0.0.1"
    revoked = by_kind["API_KEY_REVOKED"]
    assert (revoked.actor, revoked.actor_key_id, revoked.rpc) == ("user", key.key_id, "RevokeApiKey")
    assert all(e.source == "user_service" and e.count == 1 for e in mine)

    created = await audit(client, kind=K.Value("AUDIT_EVENT_KIND_USER_CREATED"))
    assert {e.user_id for e in created} == {ann, bob}
    assert await audit(client, start_time=Timestamp(seconds=int(time.time()) + 3600)) == []
    assert len(await audit(client, start_time=started, user_id=ann)) == 6
    pages = []
    token = ""
    while True:
        page = await client.stub.ListAuditEvents(
            pb.ListAuditEventsRequest(user_id=ann, page_size=4, page_token=token), metadata=ADMIN
        )
        pages.append([e.event_id for e in page.events])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [4, 2]
    assert [i for p in pages for i in p] == [e.event_id for e in mine]


async def test_events_another_service_sends_are_kept_once_per_source_event_id(client: Client) -> None:
    event = user_pb2.AuditEvent(
        kind=K.Value("AUDIT_EVENT_KIND_FOREIGN_ORDER"),
        source="exchange_gateway",
        source_event_id="aud_1",
        event_time=Timestamp(seconds=1_700_000_000),
        details={"symbol": "BTCUSDT", "exchange_order_id": "42"},
    )
    first = await client.stub.RecordAuditEvents(pb.RecordAuditEventsRequest(events=[event]), metadata=SERVICE)
    again = await client.stub.RecordAuditEvents(pb.RecordAuditEventsRequest(events=[event]), metadata=SERVICE)
    assert (first.accepted, again.accepted) == (1, 0)
    (kept,) = await audit(client, kind=K.Value("AUDIT_EVENT_KIND_FOREIGN_ORDER"))
    assert (kept.source, kept.source_event_id, dict(kept.details)) == (
        "exchange_gateway",
        "aud_1",
        {"symbol": "BTCUSDT", "exchange_order_id": "42"},
    )


async def test_the_audit_trail_is_append_only(client: Client) -> None:
    await client.new_user("ann")
    assert client.service is not None
    for sql in ("UPDATE audit_events SET kind = 'DEPOSIT'", "DELETE FROM audit_events"):
        with pytest.raises(DBAPIError, match="append-only"):
            client.service.transactions.write_sync(lambda repo, q=sql: repo.conn.execute(text(q)))
    assert len(await audit(client)) == 1


async def test_no_key_token_or_secret_is_in_an_audit_event_or_a_log_record(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    ann = await client.new_user("ann")
    trade = await new_key(client, ADMIN, ann, label="bot")
    read = await new_key(client, bearer(trade.api_key), scopes=[READ])
    assert client.service is not None
    expired = insert_key(client.service, ann, Grant(TRADE_SCOPES, int(time.time() * 1000) - 1))
    await rich_status(new_key(client, bearer(read.api_key), scopes=[TRADE]))  # denied
    await rich_status(client.stub.GetBalances(pb.GetBalancesRequest(), metadata=bearer(expired)))
    await rich_status(client.stub.GetBalances(pb.GetBalancesRequest(), metadata=bearer(trade.api_key[:-1] + "Z")))
    await rich_status(client.stub.GetBalances(pb.GetBalancesRequest(), metadata=bearer("not-a-key-but-a-guess-01")))
    for i in range(6):
        request = pb.AuthenticateApiKeyRequest(api_key=wrong_key(i), client_peer=ATTACKER)
        await rich_status(client.stub.AuthenticateApiKey(request, metadata=SERVICE))
    await client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=read.key_id), metadata=bearer(trade.api_key))

    secrets = [ADMIN_TOKEN, SERVICE_TOKEN, "not-a-key-but-a-guess-01"]
    for key in (trade.api_key, read.api_key, expired, trade.api_key[:-1] + "Z", *map(wrong_key, range(6))):
        secrets += [key, key[-43:]]
    events = await audit(client)
    assert {K.Name(e.kind) for e in events} >= {
        "AUDIT_EVENT_KIND_API_KEY_CREATED",
        "AUDIT_EVENT_KIND_PERMISSION_DENIED",
        "AUDIT_EVENT_KIND_EXPIRED_API_KEY_USED",
        "AUDIT_EVENT_KIND_AUTHENTICATION_FAILED",
        "AUDIT_EVENT_KIND_AUTHENTICATION_THROTTLED",
        "AUDIT_EVENT_KIND_API_KEY_REVOKED",
    }
    assert_no_secret(secrets, events, caplog.records)


async def test_on_both_engines_the_trail_keeps_each_event_once_lists_it_and_refuses_changes(
    engine_client: Client,
) -> None:
    client = engine_client
    ann = await client.new_user("ann")
    key = await new_key(client, ADMIN, ann, scopes=[READ], expire_time=in_a_minute())
    answer = await client.stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(api_key=key.api_key), metadata=SERVICE)
    assert list(answer.scopes) == [READ] and answer.expire_time == key.key.expire_time
    event = user_pb2.AuditEvent(
        kind=K.Value("AUDIT_EVENT_KIND_RECONCILIATION_SHORTFALL"),
        source="order_service",
        source_event_id="aud_pg_1",
        event_time=Timestamp(seconds=1_700_000_000),
        details={"asset": "USDT", "difference": "-1000.00000000"},
    )
    for _ in range(2):
        await client.stub.RecordAuditEvents(pb.RecordAuditEventsRequest(events=[event]), metadata=SERVICE)
    events = await audit(client)
    assert sorted(K.Name(e.kind) for e in events) == [
        "AUDIT_EVENT_KIND_API_KEY_CREATED",
        "AUDIT_EVENT_KIND_RECONCILIATION_SHORTFALL",
        "AUDIT_EVENT_KIND_USER_CREATED",
    ]
    assert client.service is not None
    for sql in ("UPDATE audit_events SET occurrences = 2", "DELETE FROM audit_events", "DELETE FROM api_key_grants"):
        with pytest.raises(DBAPIError):
            client.service.transactions.write_sync(lambda repo, q=sql: repo.conn.execute(text(q)))
    assert len(await audit(client)) == 3
