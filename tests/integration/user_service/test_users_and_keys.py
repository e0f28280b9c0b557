"""Users, API keys and authentication through a real gRPC client."""

from __future__ import annotations

import asyncio
import logging

import grpc
import pytest

from tests.integration.user_service.helpers import ADMIN, SERVICE, Client, bearer, error_info, rich_status
from trading.user.v1 import user_pb2
from trading.user.v1 import user_service_pb2 as pb


async def test_create_user_is_active_with_a_lower_case_email(client: Client) -> None:
    response = await client.stub.CreateUser(
        pb.CreateUserRequest(username="ann.lee", email="Ann.Lee@Example.COM"), metadata=ADMIN
    )
    user = response.user
    assert user.user_id.startswith("usr_") and len(user.user_id) == 30
    assert (user.username, user.email, user.status) == ("ann.lee", "ann.lee@example.com", user_pb2.USER_STATUS_ACTIVE)
    assert user.create_time.seconds > 0 and not user.HasField("last_login_time")
    fetched = await client.stub.GetUser(pb.GetUserRequest(user_id=user.user_id), metadata=ADMIN)
    assert fetched.user == user


@pytest.mark.parametrize(
    ("username", "email", "reason"),
    [("ann", "other@example.com", "USERNAME_TAKEN"), ("bob", "ANN@example.com", "EMAIL_TAKEN")],
)
async def test_duplicate_username_or_email_already_exists(
    client: Client, username: str, email: str, reason: str
) -> None:
    await client.stub.CreateUser(pb.CreateUserRequest(username="ann", email="ann@example.com"), metadata=ADMIN)
    code, status = await rich_status(
        client.stub.CreateUser(pb.CreateUserRequest(username=username, email=email), metadata=ADMIN)
    )
    assert code == grpc.StatusCode.ALREADY_EXISTS
    assert error_info(status).reason == reason
    listed = await client.stub.ListUsers(pb.ListUsersRequest(), metadata=ADMIN)
    assert len(listed.users) == 1


async def test_concurrent_creates_of_one_username_make_one_user(client: Client) -> None:
    calls = [
        client.stub.CreateUser(pb.CreateUserRequest(username="race", email=f"r{i}@example.com"), metadata=ADMIN)
        for i in range(10)
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(r.code() == grpc.StatusCode.ALREADY_EXISTS for r in results if isinstance(r, grpc.aio.AioRpcError))


async def test_list_users_oldest_first_paged_and_filtered(client: Client) -> None:
    ids = [await client.new_user(f"user{i}") for i in range(5)]
    await client.stub.UpdateUserStatus(
        pb.UpdateUserStatusRequest(user_id=ids[1], status=user_pb2.USER_STATUS_SUSPENDED), metadata=ADMIN
    )
    await client.stub.UpdateUserStatus(
        pb.UpdateUserStatusRequest(user_id=ids[3], status=user_pb2.USER_STATUS_SUSPENDED), metadata=ADMIN
    )
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = await client.stub.ListUsers(pb.ListUsersRequest(page_size=2, page_token=token), metadata=ADMIN)
        seen += [u.user_id for u in page.users]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert pages == 3
    suspended = await client.stub.ListUsers(pb.ListUsersRequest(status=user_pb2.USER_STATUS_SUSPENDED), metadata=ADMIN)
    assert [u.user_id for u in suspended.users] == [ids[1], ids[3]]


async def test_update_status_changes_update_time_and_round_trips(client: Client) -> None:
    user = await client.new_user("ann")
    before = (await client.stub.GetUser(pb.GetUserRequest(user_id=user), metadata=ADMIN)).user
    await asyncio.sleep(0.01)
    for status in [user_pb2.USER_STATUS_INACTIVE, user_pb2.USER_STATUS_SUSPENDED, user_pb2.USER_STATUS_ACTIVE]:
        response = await client.stub.UpdateUserStatus(
            pb.UpdateUserStatusRequest(user_id=user, status=status), metadata=ADMIN
        )
        assert response.user.status == status
    assert response.user.update_time.ToMilliseconds() > before.update_time.ToMilliseconds()


async def test_api_key_reads_its_own_user_balances_ledger_and_keys(client: Client) -> None:
    user = await client.new_user("ann")
    await client.deposit(user, "BTC", "1", "d")
    key = await client.new_key(user)
    assert (await client.stub.GetUser(pb.GetUserRequest(user_id=user), metadata=key)).user.user_id == user
    balances = await client.stub.GetBalances(pb.GetBalancesRequest(user_id=user), metadata=key)
    assert balances.balances[0].available == "1.00000000"
    entries = await client.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(user_id=user), metadata=key)
    assert len(entries.entries) == 1
    keys = await client.stub.ListApiKeys(pb.ListApiKeysRequest(user_id=user), metadata=key)
    assert [k.label for k in keys.keys] == ["test"]


async def test_api_keys_are_shown_once_listed_without_secret_and_revoked_at_once(client: Client) -> None:
    user = await client.new_user("ann")
    created = [
        await client.stub.CreateApiKey(pb.CreateApiKeyRequest(user_id=user, label=label), metadata=ADMIN)
        for label in ["bot", "laptop"]
    ]
    for response in created:
        assert response.api_key.startswith("tk_" + response.key_id.removeprefix("key_") + "_")
        assert response.key.key_id == response.key_id
    listed = await client.stub.ListApiKeys(pb.ListApiKeysRequest(user_id=user), metadata=ADMIN)
    assert [k.label for k in listed.keys] == ["bot", "laptop"]
    assert created[0].api_key.split("_", 2)[2] not in str(listed)

    bot = bearer(created[0].api_key)
    await client.stub.GetUser(pb.GetUserRequest(user_id=user), metadata=bot)
    revoked = await client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=created[0].key_id), metadata=ADMIN)
    assert revoked.key.HasField("revoke_time")
    code, _ = await rich_status(client.stub.GetUser(pb.GetUserRequest(user_id=user), metadata=bot))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    again = await client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=created[0].key_id), metadata=ADMIN)
    assert again.key.revoke_time == revoked.key.revoke_time, "revoking twice keeps the first time"
    # The other key still works.
    await client.stub.GetUser(pb.GetUserRequest(user_id=user), metadata=bearer(created[1].api_key))


async def test_authenticate_api_key_resolves_the_user_and_records_the_login(client: Client) -> None:
    user = await client.new_user("ann")
    await client.stub.UpdateUserStatus(
        pb.UpdateUserStatusRequest(user_id=user, status=user_pb2.USER_STATUS_SUSPENDED), metadata=ADMIN
    )
    created = await client.stub.CreateApiKey(pb.CreateApiKeyRequest(user_id=user, label="bot"), metadata=ADMIN)
    response = await client.stub.AuthenticateApiKey(
        pb.AuthenticateApiKeyRequest(api_key=created.api_key), metadata=SERVICE
    )
    assert response.key_id == created.key_id
    assert response.user.user_id == user
    assert response.user.status == user_pb2.USER_STATUS_SUSPENDED, "any status authenticates; the caller decides"
    assert response.user.HasField("last_login_time")
    fetched = await client.stub.GetUser(pb.GetUserRequest(user_id=user), metadata=ADMIN)
    assert fetched.user.last_login_time == response.user.last_login_time
    keys = await client.stub.ListApiKeys(pb.ListApiKeysRequest(user_id=user), metadata=ADMIN)
    assert keys.keys[0].last_used_time == response.user.last_login_time

    await client.stub.RevokeApiKey(pb.RevokeApiKeyRequest(key_id=created.key_id), metadata=ADMIN)
    code, _ = await rich_status(
        client.stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(api_key=created.api_key), metadata=SERVICE)
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED


async def test_failed_authentications_are_security_events_without_the_secret(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    user = await client.new_user("ann")
    created = await client.stub.CreateApiKey(pb.CreateApiKeyRequest(user_id=user, label="bot"), metadata=ADMIN)
    ulid, secret = created.api_key.split("_", 2)[1:]
    wrong = f"tk_{ulid}_{secret[::-1]}"
    caplog.set_level(logging.WARNING, logger="security")
    for metadata in [bearer(wrong), bearer("not-the-admin-token"), (), (("authorization", "Basic abc"),)]:
        code, _ = await rich_status(client.stub.GetUser(pb.GetUserRequest(user_id=user), metadata=metadata))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    code, _ = await rich_status(
        client.stub.AuthenticateApiKey(pb.AuthenticateApiKeyRequest(api_key=wrong), metadata=SERVICE)
    )
    assert code == grpc.StatusCode.UNAUTHENTICATED
    events = [r for r in caplog.records if r.name == "security"]
    assert len(events) == 5
    assert all(r.__dict__["event"] == "authentication_failed" for r in events)
    assert events[0].__dict__["why"] == "wrong API key secret"
    assert events[0].__dict__["key_id_prefix"] == created.key_id[:14]
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in events)
    assert secret not in logged and secret[::-1] not in logged
    assert "not-the-admin-token" not in logged


async def test_a_users_key_may_omit_the_user_id_on_its_self_service_calls_and_the_admin_may_not(client: Client) -> None:
    user = await client.new_user("selfie")
    await client.deposit(user, "USDT", "25", "d-selfie")
    key = await client.new_key(user)
    balances = await client.stub.GetBalances(pb.GetBalancesRequest(), metadata=key)
    assert [(b.asset, b.available) for b in balances.balances] == [("USDT", "25.00000000")]
    entries = await client.stub.ListLedgerEntries(pb.ListLedgerEntriesRequest(), metadata=key)
    assert [e.user_id for e in entries.entries] == [user]
    assert (await client.stub.GetUser(pb.GetUserRequest(), metadata=key)).user.user_id == user
    assert len((await client.stub.ListApiKeys(pb.ListApiKeysRequest(), metadata=key)).keys) == 1
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await client.stub.GetBalances(pb.GetBalancesRequest(), metadata=ADMIN)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id" in (missing.value.details() or "")
