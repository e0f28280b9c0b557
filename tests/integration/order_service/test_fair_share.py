"""A fair share of the exchange over the real stack: a user bursting far beyond their share is refused
with RESOURCE_EXHAUSTED naming the limit, while another user's orders keep being placed promptly."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from trading.order.v1 import order_pb2, order_service_pb2

from .conftest import ADMIN, Stack

pb = order_pb2


def details(error: grpc.aio.AioRpcError) -> tuple[dict[str, str], float | None]:
    """(ErrorInfo metadata, RetryInfo seconds) of a rich status."""
    status = rpc_status.from_call(error)
    assert status is not None
    info: dict[str, str] = {}
    retry: float | None = None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            message = error_details_pb2.ErrorInfo()
            detail.Unpack(message)
            info = dict(message.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            delay = error_details_pb2.RetryInfo()
            detail.Unpack(delay)
            retry = delay.retry_delay.seconds + delay.retry_delay.nanos / 1e9
    return info, retry


async def test_a_bursting_user_gets_resource_exhausted_while_another_users_orders_go_through(stack: Stack) -> None:
    greedy = await stack.trader({"USDT": "100000"})
    modest = await stack.trader({"USDT": "10000"})
    admin = stack.order_stub
    set_to = await admin.SetUserLimits(
        order_service_pb2.SetUserLimitsRequest(user_id=greedy.user_id, orders_per_second="2", max_open_orders=50),
        metadata=ADMIN,
    )
    assert (set_to.limits.orders_per_second, set_to.limits.is_default) == ("2", False)

    async def place(trader, price: str):  # type: ignore[no-untyped-def]
        return await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price=price)

    burst = await asyncio.gather(*(place(greedy, "40000.00") for _ in range(12)), return_exceptions=True)
    mine = [await place(modest, "41000.00") for _ in range(3)]
    refused = [r for r in burst if isinstance(r, grpc.aio.AioRpcError)]
    accepted = [r for r in burst if not isinstance(r, BaseException)]
    assert 1 <= len(accepted) <= 3 and len(refused) == 12 - len(accepted)
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        info, retry = details(error)
        assert info["limit"] == "orders_per_second" and info["value"] == "2"
        assert retry is not None and 0 < retry <= 1
    assert all(o.status == pb.ORDER_STATUS_PENDING for o in mine), "the other user is unaffected"
    balances = await stack.balances(greedy.user_id)
    assert balances["USDT"][1] == 400 * len(accepted), "a refused order reserved nothing"


async def test_open_orders_beyond_a_users_limit_are_refused_until_one_ends(stack: Stack) -> None:
    trader = await stack.trader({"USDT": "10000"})
    admin = stack.order_stub
    await admin.SetUserLimits(
        order_service_pb2.SetUserLimitsRequest(user_id=trader.user_id, orders_per_second="100", max_open_orders=2),
        metadata=ADMIN,
    )
    first = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="40000.00")
    await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="40000.00")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="40000.00")
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert details(refused.value)[0]["limit"] == "max_open_orders"
    await trader.cancel(first.order_id)
    await trader.wait(first.order_id)
    third = await trader.place(side=pb.ORDER_SIDE_BUY, type=pb.ORDER_TYPE_LIMIT, quantity="0.01", price="40000.00")
    assert third.status == pb.ORDER_STATUS_PENDING

    back = await admin.SetUserLimits(order_service_pb2.SetUserLimitsRequest(user_id=trader.user_id), metadata=ADMIN)
    assert back.limits.is_default and back.limits.max_open_orders == stack.order_config.user_max_open_orders
    got = await admin.GetUserLimits(order_service_pb2.GetUserLimitsRequest(user_id=trader.user_id), metadata=ADMIN)
    assert got.limits == back.limits


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": "usr_x", "orders_per_second": "0", "max_open_orders": 5}, "orders_per_second"),
        ({"user_id": "usr_x", "orders_per_second": "abc", "max_open_orders": 5}, "orders_per_second"),
        ({"user_id": "usr_x", "orders_per_second": "5", "max_open_orders": 0}, "max_open_orders"),
        ({"user_id": "usr_x", "max_open_orders": 5}, "orders_per_second"),
    ],
)
async def test_set_user_limits_bad_input_names_the_field(stack: Stack, fields: dict[str, object], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stack.order_stub.SetUserLimits(order_service_pb2.SetUserLimitsRequest(**fields), metadata=ADMIN)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (bad.value.details() or "")
