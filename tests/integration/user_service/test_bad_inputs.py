"""Every RPC's bad input gets the right status, names the field, and changes nothing.

One table per RPC: (case, request, caller, expected code, expected BadRequest field). Callers are
the admin and service tokens, the API key of the user the request is about ("own"), another
user's API key ("other"), no metadata, a wrong token and a malformed header. After each case the
whole database (users, keys, balances, ledger, reservations, idempotency records) is unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from tests.integration.user_service.helpers import ADMIN, SERVICE, Client, bad_field, bearer, db_state, rich_status
from trading.user.v1 import user_pb2
from trading.user.v1 import user_service_pb2 as pb

OK_CODE = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
ABORTED = grpc.StatusCode.ABORTED
UNKNOWN_USER = "usr_00000000000000000000000000"
UNKNOWN_KEY = "key_00000000000000000000000000"

BAD_AMOUNTS = [
    ("empty amount", ""),
    ("exponent", "1e5"),
    ("NaN", "NaN"),
    ("infinity", "Infinity"),
    ("too precise", "1.123456789"),
    ("negative", "-1"),
    ("zero", "0"),
    ("not a number", "abc"),
    ("padded", " 1"),
    ("too many integer digits", "123456789012345678901"),
    ("huge exponent", "1e999999999"),
]


@dataclass
class World:
    """Two users: ann (funded, with a reservation on 'ord-ann') and bob, each with an API key."""

    ann: str
    bob: str
    ann_key: tuple[tuple[str, str], ...]
    bob_key: tuple[tuple[str, str], ...]
    ann_key_id: str


@dataclass
class Case:
    name: str
    build: Callable[[World], Any]
    caller: str
    code: grpc.StatusCode
    field: str | None = None


def _metadata(world: World, caller: str) -> Any:
    return {
        "admin": ADMIN,
        "service": SERVICE,
        "own": world.ann_key,
        "other": world.bob_key,
        "none": (),
        "wrong": bearer("wrong-token-0123456789"),
        "malformed": (("authorization", "Token abc"),),
        "fake-key": bearer("tk_01J9Z3ABCDEFGHJKMNPQRSTVWX_" + "A" * 43),
    }[caller]


def auth_cases(build: Callable[[World], Any], *, allowed: str, own_allowed: bool = False) -> list[Case]:
    """Missing/wrong credentials, and the callers an RPC refuses (allowed: 'admin' or 'service')."""
    cases = [
        Case("missing token", build, "none", UNAUTH),
        Case("wrong token", build, "wrong", UNAUTH),
        Case("malformed header", build, "malformed", UNAUTH),
        Case("unknown api key", build, "fake-key", UNAUTH),
        Case("another user's key", build, "other", DENIED),
    ]
    if not own_allowed:
        cases.append(Case("user key on a non-user RPC", build, "own", DENIED))
    cases.append(
        Case(
            "admin token on an internal RPC" if allowed == "service" else "service token on an admin RPC",
            build,
            "admin" if allowed == "service" else "service",
            DENIED,
        )
    )
    return cases


def amount_cases(make: Callable[[World, str], Any], caller: str, field: str = "amount") -> list[Case]:
    return [Case(label, lambda w, a=amount: make(w, a), caller, INVALID, field) for label, amount in BAD_AMOUNTS]


def deposit(w: World, amount: str = "1", **over: str) -> pb.DepositRequest:
    fields = {"user_id": w.ann, "asset": "USDT", "amount": amount, "request_id": "bad-dep"}
    return pb.DepositRequest(**{**fields, **over})


def withdraw(w: World, amount: str = "1", **over: str) -> pb.WithdrawRequest:
    fields = {"user_id": w.ann, "asset": "USDT", "amount": amount, "request_id": "bad-wd"}
    return pb.WithdrawRequest(**{**fields, **over})


def reserve(w: World, amount: str = "1", **over: str) -> pb.ReserveFundsRequest:
    fields = {"order_id": "ord-new", "user_id": w.ann, "asset": "USDT", "amount": amount}
    return pb.ReserveFundsRequest(**{**fields, **over})


def release(w: World, amount: str = "", **over: str) -> pb.ReleaseFundsRequest:
    fields = {"order_id": "ord-ann", "release_id": "rel-new", "amount": amount}
    return pb.ReleaseFundsRequest(**{**fields, **over})


def recorded(**over: Any) -> pb.RecordAuditEventsRequest:
    fields = {
        "kind": user_pb2.AUDIT_EVENT_KIND_FOREIGN_ORDER,
        "source": "exchange_gateway",
        "source_event_id": "evt-1",
        "event_time": Timestamp(seconds=1_700_000_000),
    }
    return pb.RecordAuditEventsRequest(events=[user_pb2.AuditEvent(**{**fields, **over})])


def settle(w: World, **over: Any) -> pb.SettleTradeRequest:
    fields = {
        "trade_id": "T:new",
        "order_id": "ord-ann",
        "user_id": w.ann,
        "debit_asset": "USDT",
        "debit_amount": "10",
        "credit_asset": "BTC",
        "credit_amount": "0.001",
        "fee_asset": "BTC",
        "fee_amount": "0.000001",
        "trade_time": Timestamp(seconds=1_700_000_000),
    }
    return pb.SettleTradeRequest(**{**fields, **over})


BAD_EXCHANGE_FEES = [
    ("negative", "-0.1", "exchange_fee_amount"),
    ("not a number", "abc", "exchange_fee_amount"),
    ("exponent", "1e-3", "exchange_fee_amount"),
    ("too precise", "0.000000001", "exchange_fee_amount"),
    ("padded", " 0.1", "exchange_fee_amount"),
]


def bnb_fee(amount: str) -> dict[str, str]:
    return {"exchange_fee_asset": "BNB", "exchange_fee_amount": amount}


def settle_ann_again(w: World, **over: Any) -> pb.SettleTradeRequest:
    """The trade 'T:ann' that _world settled, with its content exactly, plus ``over``."""
    fields = {
        "trade_id": "T:ann",
        "order_id": "ord-ann",
        "user_id": w.ann,
        "debit_asset": "USDT",
        "debit_amount": "5",
        "credit_asset": "BTC",
        "credit_amount": "0.0001",
    }
    return pb.SettleTradeRequest(**{**fields, **over})


def settle_bob(w: World, **over: Any) -> pb.SettleTradeRequest:
    """A trade of bob's order 'ord-bob' (reserved in USDT)."""
    return settle(w, order_id="ord-bob", user_id=w.bob, **over)


TABLE: dict[str, list[Case]] = {
    "CreateUser": [
        Case(
            "empty username",
            lambda w: pb.CreateUserRequest(username="", email="x@example.com"),
            "admin",
            INVALID,
            "username",
        ),
        Case(
            "upper-case username",
            lambda w: pb.CreateUserRequest(username="Zed", email="z@example.com"),
            "admin",
            INVALID,
            "username",
        ),
        Case(
            "short username",
            lambda w: pb.CreateUserRequest(username="zz", email="z@example.com"),
            "admin",
            INVALID,
            "username",
        ),
        Case("empty email", lambda w: pb.CreateUserRequest(username="zed", email=""), "admin", INVALID, "email"),
        Case(
            "malformed email", lambda w: pb.CreateUserRequest(username="zed", email="zed@"), "admin", INVALID, "email"
        ),
        Case(
            "taken username",
            lambda w: pb.CreateUserRequest(username="ann", email="new@example.com"),
            "admin",
            grpc.StatusCode.ALREADY_EXISTS,
        ),
        *auth_cases(lambda w: pb.CreateUserRequest(username="zed", email="zed@example.com"), allowed="admin"),
    ],
    "GetUser": [
        Case("empty user_id", lambda w: pb.GetUserRequest(user_id=""), "admin", INVALID, "user_id"),
        Case("malformed user_id", lambda w: pb.GetUserRequest(user_id="ann"), "admin", INVALID, "user_id"),
        Case("unknown user", lambda w: pb.GetUserRequest(user_id=UNKNOWN_USER), "admin", NOT_FOUND),
        *auth_cases(lambda w: pb.GetUserRequest(user_id=w.ann), allowed="admin", own_allowed=True)[:5],
    ],
    "ListUsers": [
        Case("negative page_size", lambda w: pb.ListUsersRequest(page_size=-1), "admin", INVALID, "page_size"),
        Case("garbage page_token", lambda w: pb.ListUsersRequest(page_token="%%%"), "admin", INVALID, "page_token"),
        Case("foreign page_token", lambda w: pb.ListUsersRequest(page_token="ZTo3"), "admin", INVALID, "page_token"),
        Case("unknown status", lambda w: pb.ListUsersRequest(status=99), "admin", INVALID, "status"),  # type: ignore[arg-type]
        *auth_cases(lambda w: pb.ListUsersRequest(), allowed="admin"),
    ],
    "UpdateUserStatus": [
        Case("unspecified status", lambda w: pb.UpdateUserStatusRequest(user_id=w.ann), "admin", INVALID, "status"),
        Case(
            "unknown status", lambda w: pb.UpdateUserStatusRequest(user_id=w.ann, status=7), "admin", INVALID, "status"
        ),  # type: ignore[arg-type]
        Case(
            "malformed user_id",
            lambda w: pb.UpdateUserStatusRequest(user_id="x", status=1),
            "admin",
            INVALID,
            "user_id",
        ),
        Case("unknown user", lambda w: pb.UpdateUserStatusRequest(user_id=UNKNOWN_USER, status=1), "admin", NOT_FOUND),
        *auth_cases(
            lambda w: pb.UpdateUserStatusRequest(user_id=w.ann, status=user_pb2.USER_STATUS_SUSPENDED), allowed="admin"
        ),
    ],
    "CreateApiKey": [
        Case("empty user_id", lambda w: pb.CreateApiKeyRequest(user_id=""), "admin", INVALID, "user_id"),
        Case("unknown user", lambda w: pb.CreateApiKeyRequest(user_id=UNKNOWN_USER), "admin", NOT_FOUND),
        Case("long label", lambda w: pb.CreateApiKeyRequest(user_id=w.ann, label="x" * 65), "admin", INVALID, "label"),
        Case(
            "control label", lambda w: pb.CreateApiKeyRequest(user_id=w.ann, label="a\x00"), "admin", INVALID, "label"
        ),
        Case("unknown scope", lambda w: pb.CreateApiKeyRequest(user_id=w.ann, scopes=[7]), "admin", INVALID, "scopes"),
        Case(
            "unspecified scope",
            lambda w: pb.CreateApiKeyRequest(user_id=w.ann, scopes=[user_pb2.SCOPE_UNSPECIFIED]),
            "own",
            INVALID,
            "scopes",
        ),
        Case(
            "expire_time in the past",
            lambda w: pb.CreateApiKeyRequest(user_id=w.ann, expire_time=Timestamp(seconds=1_600_000_000)),
            "admin",
            INVALID,
            "expire_time",
        ),
        *auth_cases(lambda w: pb.CreateApiKeyRequest(user_id=w.ann, label="x"), allowed="admin", own_allowed=True),
    ],
    "ListApiKeys": [
        Case("empty user_id", lambda w: pb.ListApiKeysRequest(user_id=""), "admin", INVALID, "user_id"),
        Case("unknown user", lambda w: pb.ListApiKeysRequest(user_id=UNKNOWN_USER), "admin", NOT_FOUND),
        Case("service token", lambda w: pb.ListApiKeysRequest(user_id=w.ann), "service", DENIED),
        *auth_cases(lambda w: pb.ListApiKeysRequest(user_id=w.ann), allowed="admin", own_allowed=True)[:5],
    ],
    "RevokeApiKey": [
        Case("empty key_id", lambda w: pb.RevokeApiKeyRequest(key_id=""), "admin", INVALID, "key_id"),
        Case("malformed key_id", lambda w: pb.RevokeApiKeyRequest(key_id="tk_abc"), "admin", INVALID, "key_id"),
        Case("unknown key", lambda w: pb.RevokeApiKeyRequest(key_id=UNKNOWN_KEY), "admin", NOT_FOUND),
        *auth_cases(lambda w: pb.RevokeApiKeyRequest(key_id=w.ann_key_id), allowed="admin", own_allowed=True),
    ],
    "Deposit": [
        *amount_cases(deposit, "admin"),
        Case("empty asset", lambda w: deposit(w, asset=""), "admin", INVALID, "asset"),
        Case("lower-case asset", lambda w: deposit(w, asset="usdt"), "admin", INVALID, "asset"),
        Case("empty request_id", lambda w: deposit(w, request_id=""), "admin", INVALID, "request_id"),
        Case("long request_id", lambda w: deposit(w, request_id="r" * 65), "admin", INVALID, "request_id"),
        Case("empty user_id", lambda w: deposit(w, user_id=""), "admin", INVALID, "user_id"),
        Case("malformed user_id", lambda w: deposit(w, user_id="usr_x"), "admin", INVALID, "user_id"),
        Case("unknown user", lambda w: deposit(w, user_id=UNKNOWN_USER), "admin", NOT_FOUND),
        Case("reused request_id", lambda w: deposit(w, request_id="fund-ann"), "admin", ABORTED),
        Case("asset no listed symbol trades", lambda w: deposit(w, asset="DOGE"), "admin", INVALID, "asset"),
        *auth_cases(deposit, allowed="admin"),
    ],
    "Withdraw": [
        *amount_cases(withdraw, "admin"),
        Case("more than available", lambda w: withdraw(w, "901.00000001"), "admin", PRECONDITION),
        Case("asset never held", lambda w: withdraw(w, asset="ETH"), "admin", PRECONDITION),
        Case("asset no listed symbol trades", lambda w: withdraw(w, asset="DOGE"), "admin", INVALID, "asset"),
        Case("empty request_id", lambda w: withdraw(w, request_id=""), "admin", INVALID, "request_id"),
        Case("unknown user", lambda w: withdraw(w, user_id=UNKNOWN_USER), "admin", NOT_FOUND),
        *auth_cases(withdraw, allowed="admin"),
    ],
    "GetBalances": [
        Case("empty user_id", lambda w: pb.GetBalancesRequest(user_id=""), "admin", INVALID, "user_id"),
        Case("unknown user", lambda w: pb.GetBalancesRequest(user_id=UNKNOWN_USER), "service", NOT_FOUND),
        *auth_cases(lambda w: pb.GetBalancesRequest(user_id=w.ann), allowed="admin", own_allowed=True)[:5],
    ],
    "ListLedgerEntries": [
        Case("empty user_id", lambda w: pb.ListLedgerEntriesRequest(user_id=""), "admin", INVALID, "user_id"),
        Case("bad asset", lambda w: pb.ListLedgerEntriesRequest(user_id=w.ann, asset="usdt"), "own", INVALID, "asset"),
        Case(
            "negative page_size",
            lambda w: pb.ListLedgerEntriesRequest(user_id=w.ann, page_size=-5),
            "admin",
            INVALID,
            "page_size",
        ),
        Case(
            "garbage page_token",
            lambda w: pb.ListLedgerEntriesRequest(user_id=w.ann, page_token="zz"),
            "admin",
            INVALID,
            "page_token",
        ),
        Case("unknown user", lambda w: pb.ListLedgerEntriesRequest(user_id=UNKNOWN_USER), "admin", NOT_FOUND),
        *auth_cases(lambda w: pb.ListLedgerEntriesRequest(user_id=w.ann), allowed="admin", own_allowed=True)[:5],
    ],
    "AuthenticateApiKey": [
        Case("empty api_key", lambda w: pb.AuthenticateApiKeyRequest(api_key=""), "service", INVALID, "api_key"),
        Case("malformed api_key", lambda w: pb.AuthenticateApiKeyRequest(api_key="tk_nope"), "service", UNAUTH),
        Case(
            "unknown api_key",
            lambda w: pb.AuthenticateApiKeyRequest(api_key="tk_01J9Z3ABCDEFGHJKMNPQRSTVWX_" + "A" * 43),
            "service",
            UNAUTH,
        ),
        *auth_cases(lambda w: pb.AuthenticateApiKeyRequest(api_key=w.ann_key[0][1][7:]), allowed="service"),
    ],
    "ReserveFunds": [
        *amount_cases(reserve, "service"),
        Case("more than available", lambda w: reserve(w, "901.00000001"), "service", PRECONDITION),
        Case("empty order_id", lambda w: reserve(w, order_id=""), "service", INVALID, "order_id"),
        Case("long order_id", lambda w: reserve(w, order_id="o" * 65), "service", INVALID, "order_id"),
        Case("order_id with a space", lambda w: reserve(w, order_id="o 1"), "service", INVALID, "order_id"),
        Case("bad asset", lambda w: reserve(w, asset="U"), "service", INVALID, "asset"),
        Case("unknown user", lambda w: reserve(w, user_id=UNKNOWN_USER), "service", NOT_FOUND),
        Case("reused order_id", lambda w: reserve(w, "2", order_id="ord-ann"), "service", ABORTED),
        *auth_cases(reserve, allowed="service"),
    ],
    "ReleaseFunds": [
        *amount_cases(release, "service")[1:],  # an empty amount means "all"
        Case("empty order_id", lambda w: release(w, order_id=""), "service", INVALID, "order_id"),
        Case("empty release_id", lambda w: release(w, release_id=""), "service", INVALID, "release_id"),
        Case("long release_id", lambda w: release(w, release_id="r" * 129), "service", INVALID, "release_id"),
        Case("reused release_id", lambda w: release(w, "2", release_id="rel-ann"), "service", ABORTED),
        *auth_cases(release, allowed="service"),
    ],
    "SettleTrade": [
        *amount_cases(lambda w, a: settle(w, debit_amount=a), "service", "debit_amount"),
        *amount_cases(lambda w, a: settle(w, credit_amount=a), "service", "credit_amount"),
        Case("negative fee", lambda w: settle(w, fee_amount="-0.1"), "service", INVALID, "fee_amount"),
        Case("fee too precise", lambda w: settle(w, fee_amount="0.000000001"), "service", INVALID, "fee_amount"),
        Case("fee in a third asset", lambda w: settle(w, fee_asset="BNB"), "service", INVALID, "fee_asset"),
        Case("fee without asset", lambda w: settle(w, fee_asset=""), "service", INVALID, "fee_asset"),
        Case(
            "same debit and credit asset",
            lambda w: settle(w, credit_asset="USDT", fee_asset="USDT"),
            "service",
            INVALID,
            "credit_asset",
        ),
        Case("empty trade_id", lambda w: settle(w, trade_id=""), "service", INVALID, "trade_id"),
        Case("long trade_id", lambda w: settle(w, trade_id="t" * 129), "service", INVALID, "trade_id"),
        Case("empty order_id", lambda w: settle(w, order_id=""), "service", INVALID, "order_id"),
        Case("bad debit_asset", lambda w: settle(w, debit_asset="usdt"), "service", INVALID, "debit_asset"),
        Case("empty credit_asset", lambda w: settle(w, credit_asset=""), "service", INVALID, "credit_asset"),
        Case("malformed user_id", lambda w: settle(w, user_id="ann"), "service", INVALID, "user_id"),
        Case("unknown user", lambda w: settle(w, user_id=UNKNOWN_USER), "service", NOT_FOUND),
        Case("order without reservation", lambda w: settle(w, order_id="ord-none"), "service", PRECONDITION),
        Case("another user's reservation", lambda w: settle(w, user_id=w.bob), "service", PRECONDITION),
        Case("wrong debit asset", lambda w: settle(w, debit_asset="ETH"), "service", PRECONDITION),
        Case("more than reserved and available", lambda w: settle(w, debit_amount="1000"), "service", PRECONDITION),
        Case("reused trade_id", lambda w: settle(w, trade_id="T:ann"), "service", ABORTED),
        *[
            Case(f"exchange fee: {label}", lambda w, a=amount: settle(w, **bnb_fee(a)), "service", INVALID, field)
            for label, amount, field in BAD_EXCHANGE_FEES
        ],
        Case(
            "exchange fee without asset",
            lambda w: settle(w, exchange_fee_asset="", exchange_fee_amount="0.1"),
            "service",
            INVALID,
            "exchange_fee_asset",
        ),
        Case(
            "lower-case exchange fee asset",
            lambda w: settle(w, exchange_fee_asset="bnb", exchange_fee_amount="0.1"),
            "service",
            INVALID,
            "exchange_fee_asset",
        ),
        Case(
            "trade_id reused with an exchange fee",
            lambda w: settle_ann_again(w, **bnb_fee("0.0001")),
            "service",
            ABORTED,
        ),
        Case("long release_id", lambda w: settle(w, release_id="r" * 129), "service", INVALID, "release_id"),
        Case("release_id with a space", lambda w: settle(w, release_id="r 1"), "service", INVALID, "release_id"),
        Case("release_id with a control", lambda w: settle(w, release_id="r\n"), "service", INVALID, "release_id"),
        # The release id was used for a partial release: the whole call, the trade included, is refused.
        Case("release_id reused for a partial release", lambda w: settle(w, release_id="rel-ann"), "service", ABORTED),
        Case("release_id of another order", lambda w: settle_bob(w, release_id="rel-ann"), "service", ABORTED),
        Case(
            "release_id with a trade that cannot settle",
            lambda w: settle(w, release_id="rel-new", debit_amount="1000"),
            "service",
            PRECONDITION,
        ),
        *auth_cases(settle, allowed="service"),
        *auth_cases(lambda w: settle(w, release_id="rel-new"), allowed="service"),
    ],
    "GetLedgerTotals": auth_cases(lambda w: pb.GetLedgerTotalsRequest(), allowed="admin")[:6],
    "ListHouseEntries": [
        Case("unknown account", lambda w: pb.ListHouseEntriesRequest(account="cash"), "admin", INVALID, "account"),
        Case("bad asset", lambda w: pb.ListHouseEntriesRequest(asset="bnb"), "admin", INVALID, "asset"),
        Case("negative page_size", lambda w: pb.ListHouseEntriesRequest(page_size=-1), "admin", INVALID, "page_size"),
        Case(
            "garbage page_token", lambda w: pb.ListHouseEntriesRequest(page_token="zz"), "admin", INVALID, "page_token"
        ),
        Case(
            "a ledger entries page_token",
            lambda w: pb.ListHouseEntriesRequest(page_token="ZTo3"),
            "admin",
            INVALID,
            "page_token",
        ),
        *auth_cases(lambda w: pb.ListHouseEntriesRequest(), allowed="admin"),
    ],
    "ListAuditEvents": [
        Case("unknown kind", lambda w: pb.ListAuditEventsRequest(kind=99), "admin", INVALID, "kind"),
        Case("malformed user_id", lambda w: pb.ListAuditEventsRequest(user_id="ann"), "admin", INVALID, "user_id"),
        Case("negative page_size", lambda w: pb.ListAuditEventsRequest(page_size=-1), "admin", INVALID, "page_size"),
        Case(
            "garbage page_token", lambda w: pb.ListAuditEventsRequest(page_token="zz"), "admin", INVALID, "page_token"
        ),
        Case(
            "end before start",
            lambda w: pb.ListAuditEventsRequest(
                start_time=Timestamp(seconds=1_700_000_100), end_time=Timestamp(seconds=1_700_000_000)
            ),
            "admin",
            INVALID,
            "end_time",
        ),
        *auth_cases(lambda w: pb.ListAuditEventsRequest(), allowed="admin"),
    ],
    "ListReservations": [
        Case("negative page_size", lambda w: pb.ListReservationsRequest(page_size=-1), "service", INVALID, "page_size"),
        *auth_cases(lambda w: pb.ListReservationsRequest(), allowed="service"),
    ],
    "RecordAuditEvents": [
        Case(
            "a kind only the user service sees",
            lambda w: recorded(kind=user_pb2.AUDIT_EVENT_KIND_DEPOSIT),
            "service",
            INVALID,
            "events[0].kind",
        ),
        Case("unknown source", lambda w: recorded(source="user_service"), "service", INVALID, "events[0].source"),
        Case(
            "no source_event_id",
            lambda w: recorded(source_event_id=""),
            "service",
            INVALID,
            "events[0].source_event_id",
        ),
        Case("no event_time", lambda w: recorded(event_time=None), "service", INVALID, "events[0].event_time"),
        Case("unknown actor", lambda w: recorded(actor="root"), "service", INVALID, "events[0].actor"),
        *auth_cases(lambda w: recorded(), allowed="service"),
    ],
}


async def _world(client: Client) -> World:
    ann = await client.new_user("ann")
    bob = await client.new_user("bob")
    await client.deposit(ann, "USDT", "1000", "fund-ann")
    await client.deposit(bob, "USDT", "1000", "fund-bob")
    await client.reserve("ord-ann", ann, "USDT", "100")
    await client.reserve("ord-bob", bob, "USDT", "100")
    await client.stub.ReleaseFunds(
        pb.ReleaseFundsRequest(order_id="ord-ann", release_id="rel-ann", amount="1"), metadata=SERVICE
    )
    await client.stub.SettleTrade(
        settle_ann := pb.SettleTradeRequest(
            trade_id="T:ann",
            order_id="ord-ann",
            user_id=ann,
            debit_asset="USDT",
            debit_amount="5",
            credit_asset="BTC",
            credit_amount="0.0001",
        ),
        metadata=SERVICE,
    )
    assert settle_ann == settle_ann_again(World(ann, bob, (), (), ""))
    created = await client.stub.CreateApiKey(pb.CreateApiKeyRequest(user_id=ann, label="ann"), metadata=ADMIN)
    return World(ann, bob, bearer(created.api_key), await client.new_key(bob), created.key_id)


def test_every_rpc_has_a_table() -> None:
    assert set(TABLE) == set(pb.DESCRIPTOR.services_by_name["UserService"].methods_by_name)


@pytest.mark.parametrize("rpc", sorted(TABLE))
async def test_bad_input_gets_the_right_status_and_changes_nothing(client: Client, rpc: str) -> None:
    world = await _world(client)
    method = getattr(client.stub, rpc)
    for case in TABLE[rpc]:
        before = db_state(client.service)
        code, status = await rich_status(method(case.build(world), metadata=_metadata(world, case.caller)))
        assert code == case.code, f"{rpc}: {case.name}: got {code.name}"
        if case.field is not None:
            assert bad_field(status) == case.field, f"{rpc}: {case.name}"
        assert db_state(client.service) == before, f"{rpc}: {case.name} changed the database"
