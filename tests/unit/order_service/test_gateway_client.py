"""The gateway client: the reconciliation report reads every page of the gateway's admin lists."""

from __future__ import annotations

from typing import Any

import grpc

from services.order_service.adapters.gateway_client import GrpcGateway
from trading.gateway.v1 import gateway_pb2
from trading.gateway.v1 import gateway_service_pb2 as pb


class PagedStub:
    """Answers ListForeignOrders and ListAnomalies from fixed lists, ``size`` items a page at most."""

    def __init__(self, orders: int, anomalies: int, size: int):
        self.orders = [gateway_pb2.ForeignOrder(symbol="ETHUSDT", client_order_id=f"web_{i}") for i in range(orders)]
        self.anomalies = [gateway_pb2.Anomaly(symbol="BTCUSDT", trade_id=i) for i in range(anomalies)]
        self.size = size
        self.tokens: list[str] = []

    def _page(self, items: list[Any], request: Any) -> tuple[list[Any], str]:
        self.tokens.append(request.page_token)
        start = int(request.page_token or 0)
        end = start + min(self.size, request.page_size)
        return items[start:end], str(end) if end < len(items) else ""

    async def ListForeignOrders(self, request: pb.ListForeignOrdersRequest, **_: Any) -> pb.ListForeignOrdersResponse:
        page, token = self._page(self.orders, request)
        return pb.ListForeignOrdersResponse(orders=page, next_page_token=token)

    async def ListAnomalies(self, request: pb.ListAnomaliesRequest, **_: Any) -> pb.ListAnomaliesResponse:
        page, token = self._page(self.anomalies, request)
        return pb.ListAnomaliesResponse(anomalies=page, next_page_token=token)


async def test_every_page_of_foreign_orders_and_anomalies_is_read() -> None:
    stub = PagedStub(orders=5, anomalies=3, size=2)
    async with grpc.aio.insecure_channel("127.0.0.1:1") as channel:  # never used: the stub answers
        gateway = GrpcGateway(channel, "service-token")
        gateway.stub = stub  # type: ignore[assignment]
        orders = await gateway.foreign_orders(5.0)
        anomalies = await gateway.anomalies(5.0)
    assert [o.client_order_id for o in orders] == [f"web_{i}" for i in range(5)]
    assert [a.trade_id for a in anomalies] == [0, 1, 2]
    assert stub.tokens == ["", "2", "4", "", "2"]
