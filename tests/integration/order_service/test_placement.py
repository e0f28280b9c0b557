"""PlaceOrder's promises over gRPC: idempotency, refusals that change nothing, authentication."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from trading.order.v1 import order_pb2, order_service_pb2
from trading.user.v1 import user_pb2, user_service_pb2

from .conftest import ADMIN, SERVICE_TOKEN, Stack

BUY, SELL, LIMIT = order_pb2.ORDER_SIDE_BUY, order_pb2.ORDER_SIDE_SELL, order_pb2.ORDER_TYPE_LIMIT

D = Decimal
pb = order_pb2
LIMIT_BUY = {"side": pb.ORDER_SIDE_BUY, "type": pb.ORDER_TYPE_LIMIT, "quantity": "0.01", "price": "49000.00"}


async def rpc_error(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc
    raise AssertionError("the call succeeded")


async def test_the_same_client_order_id_twice_gives_one_order(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    first = await trader.place(client_order_id="my-order-1", **LIMIT_BUY)
    again = await trader.place(client_order_id="my-order-1", **LIMIT_BUY)
    together = await asyncio.gather(*(trader.place(client_order_id="my-order-2", **LIMIT_BUY) for _ in range(4)))
    assert again.order_id == first.order_id and again.client_order_id == "my-order-1"
    assert len({o.order_id for o in together}) == 1
    assert len((await trader.orders()).orders) == 2
    await stack.settled()
    assert (await stack.balances(trader.user_id))["USDT"] == (D("9020"), D("980"))  # two reservations, not six
    entries = await stack.ledger(trader.user_id)
    assert sum(1 for e in entries if e.kind == user_pb2.LEDGER_ENTRY_KIND_RESERVE) == 2


async def test_insufficient_funds_is_failed_precondition_and_changes_nothing(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "100"})
    error = await rpc_error(trader.place(**LIMIT_BUY))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await stack.balances(trader.user_id) == {"USDT": (D("100"), D("0"))}
    assert len(await stack.ledger(trader.user_id)) == 1  # the deposit only
    assert (await trader.orders()).orders == []


async def test_a_suspended_user_cannot_place_but_can_still_read(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    resting = await trader.place(**LIMIT_BUY)
    await stack.set_status(trader.user_id, user_pb2.USER_STATUS_SUSPENDED)
    await asyncio.sleep(0.4)  # the order service caches authentication for 0.3 s in these tests
    error = await rpc_error(trader.place(client_order_id="after-suspension", **LIMIT_BUY))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not ACTIVE" in (error.details() or "") or "ACTIVE" in (error.details() or "")
    assert (await stack.balances(trader.user_id))["USDT"] == (D("9510"), D("490"))
    assert [o.order_id for o in (await trader.orders()).orders] == [resting.order_id]
    cancelled = await trader.cancel(resting.order_id)  # reading and cancelling are still allowed
    assert cancelled.status in (pb.ORDER_STATUS_CANCELLED, pb.ORDER_STATUS_PENDING)


async def test_a_revoked_key_is_refused_within_seconds(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    await trader.orders()
    await stack.users.RevokeApiKey(user_service_pb2.RevokeApiKeyRequest(key_id=trader.key_id), metadata=ADMIN)
    await asyncio.sleep(0.4)
    error = await rpc_error(trader.orders())
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_tokens_that_are_not_user_keys_are_refused(stack: Stack) -> None:
    stub = stack.order_stub
    request = order_service_pb2.ListOrdersRequest()
    no_token = await rpc_error(stub.ListOrders(request))
    assert no_token.code() == grpc.StatusCode.UNAUTHENTICATED
    unknown = await rpc_error(stub.ListOrders(request, metadata=(("authorization", "Bearer tk_nope_nope"),)))
    assert unknown.code() == grpc.StatusCode.UNAUTHENTICATED
    for token in (SERVICE_TOKEN, ADMIN[0][1].removeprefix("Bearer ")):
        denied = await rpc_error(stub.ListOrders(request, metadata=(("authorization", f"Bearer {token}"),)))
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({**LIMIT_BUY, "symbol": "NOPEUSDT"}, "symbol"),
        ({**LIMIT_BUY, "quantity": "0.000001"}, "quantity"),
        ({**LIMIT_BUY, "price": "49000.001"}, "price"),
        ({**LIMIT_BUY, "stop_price": "48000"}, "stop_price"),
        ({**LIMIT_BUY, "side": 0}, "side"),
        ({**LIMIT_BUY, "type": 9}, "type"),
        ({**LIMIT_BUY, "quantity": "0.0001"}, "quantity"),  # notional 4.9 < 5
        ({**LIMIT_BUY, "client_order_id": "no spaces please"}, "client_order_id"),
    ],
)
async def test_invalid_requests_name_the_field_and_reserve_nothing(stack: Stack, fields: dict, field: str) -> None:  # type: ignore[type-arg]
    trader = await stack.trader({"USDT": "10000"})
    error = await rpc_error(trader.place(**fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(error)
    assert status is not None
    violations = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend(v.field for v in bad.field_violations)
    assert violations == [field]
    assert await stack.balances(trader.user_id) == {"USDT": (D("10000"), D("0"))}


async def test_list_orders_pages_newest_first_with_filters(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    placed = [await trader.place(**LIMIT_BUY) for _ in range(5)]
    first = await trader.orders(page_size=2)
    second = await trader.orders(page_size=2, page_token=first.next_page_token)
    third = await trader.orders(page_size=2, page_token=second.next_page_token)
    listed = [o.order_id for page in (first, second, third) for o in page.orders]
    assert listed == [o.order_id for o in reversed(placed)]
    assert third.next_page_token == ""
    await trader.cancel(placed[0].order_id)
    await trader.wait(placed[0].order_id)
    active = await trader.orders(active_only=True)
    assert len(active.orders) == 4
    cancelled = await trader.orders(status=pb.ORDER_STATUS_CANCELLED)
    assert [o.order_id for o in cancelled.orders] == [placed[0].order_id]
    assert (await trader.orders(symbol="ETHUSDT")).orders == []
    error = await rpc_error(trader.orders(symbol="ETHUSDT", page_token=first.next_page_token))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_client_order_id_reused_with_other_content_is_aborted_naming_the_field(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    fields = {"side": BUY, "type": LIMIT, "quantity": "0.01", "price": "45000.00", "client_order_id": "reuse-1"}
    first = await trader.place(**fields)
    assert (await trader.place(**fields)).order_id == first.order_id, "the same request again: the first order"
    for name, other in (("price", "44000.00"), ("quantity", "0.02"), ("side", SELL)):
        with pytest.raises(grpc.aio.AioRpcError) as conflict:
            await trader.place(**{**fields, name: other})
        assert conflict.value.code() == grpc.StatusCode.ABORTED
        assert name in (conflict.value.details() or "")
    assert [o.order_id for o in (await trader.orders()).orders] == [first.order_id]
    assert await stack.balances(trader.user_id) == {"USDT": (D("9550"), D("450"))}, "reserved once"
