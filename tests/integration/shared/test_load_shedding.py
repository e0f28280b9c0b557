"""Load shedding on a real server: beyond ``max_in_flight`` unary calls in progress, a call is refused at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from shared.errors import ResourceExhausted
from shared.grpc_errors import from_rpc_error
from shared.server import Admission, Registration, create_server
from shared.telemetry import Telemetry
from trading.order.v1 import order_service_pb2 as pb
from trading.order.v1 import order_service_pb2_grpc

LIMIT = 3


class HeldServicer(order_service_pb2_grpc.OrderServiceServicer):
    """GetOrder waits until released; WatchOrders stays open until released."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def GetOrder(self, request: pb.GetOrderRequest, context: Any) -> pb.GetOrderResponse:
        self.entered += 1
        await self.release.wait()
        return pb.GetOrderResponse()

    async def WatchOrders(self, request: pb.WatchOrdersRequest, context: Any) -> AsyncIterator[pb.WatchOrdersResponse]:
        yield pb.WatchOrdersResponse()
        await self.release.wait()


SHED = {"grpc_service": "trading.order.v1.OrderService", "grpc_method": "GetOrder"}


@pytest.fixture
async def held() -> AsyncIterator[tuple[HeldServicer, order_service_pb2_grpc.OrderServiceStub, Telemetry]]:
    servicer = HeldServicer()
    registration = Registration(
        "trading.order.v1.OrderService", order_service_pb2_grpc.add_OrderServiceServicer_to_server, servicer
    )
    telemetry = Telemetry.create("shedding")
    server, port, _, _ = await create_server("127.0.0.1:0", [registration], max_in_flight=LIMIT, telemetry=telemetry)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield servicer, order_service_pb2_grpc.OrderServiceStub(channel), telemetry
    servicer.release.set()
    await channel.close()
    await server.stop(None)


async def wait_until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_calls_beyond_the_limit_are_refused_with_a_retry_delay_and_admitted_again_after(held) -> None:
    servicer, stub, telemetry = held
    # Streams are not counted: two open watchers leave room for LIMIT unary calls.
    watchers = [stub.WatchOrders(pb.WatchOrdersRequest()) for _ in range(2)]
    for watcher in watchers:
        await watcher.read()
    taken = [asyncio.ensure_future(stub.GetOrder(pb.GetOrderRequest(order_id=f"o{i}"))) for i in range(LIMIT)]
    await wait_until(lambda: servicer.entered == LIMIT)

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GetOrder(pb.GetOrderRequest(order_id="one-too-many"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    error = from_rpc_error(refused.value)
    assert isinstance(error, ResourceExhausted)
    assert error.reason == "OVERLOADED" and error.retry_after == Admission.RETRY_AFTER_S
    assert servicer.entered == LIMIT  # the handler never ran
    # Counted once the server has finished the call, which may be just after the client has its status.
    await wait_until(lambda: telemetry.registry.get_sample_value("trading_calls_shed_total", SHED) == 1)

    servicer.release.set()
    assert all(isinstance(reply, pb.GetOrderResponse) for reply in await asyncio.gather(*taken))
    assert isinstance(await stub.GetOrder(pb.GetOrderRequest(order_id="later"), timeout=10), pb.GetOrderResponse)
    assert telemetry.registry.get_sample_value("trading_calls_shed_total", SHED) == 1  # the calls taken: not shed
    for watcher in watchers:
        watcher.cancel()


def test_admission_counts_calls_in_and_out() -> None:
    admission = Admission(2)
    assert admission.enter("/m") and admission.enter("/m")
    with pytest.raises(ResourceExhausted):
        admission.enter("/m")
    admission.leave()
    assert admission.enter("/m")
    assert (admission.in_flight, admission.refused) == (2, 1)
    unlimited = Admission(0)
    assert all(unlimited.enter("/m") for _ in range(10_000))
    with pytest.raises(ValueError):
        Admission(-1)
