"""gRPC servicer of trading.order.v1.OrderService: not built yet, every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

from trading.order.v1 import order_service_pb2_grpc


class OrderServiceServicer(order_service_pb2_grpc.OrderServiceServicer):
    """The generated base class answers UNIMPLEMENTED for every RPC until the service is built."""
