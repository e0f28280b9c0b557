"""gRPC servicer of trading.gateway.v1.ExchangeGateway: not built yet, every RPC answers UNIMPLEMENTED."""

from __future__ import annotations

from trading.gateway.v1 import gateway_service_pb2_grpc


class ExchangeGatewayServicer(gateway_service_pb2_grpc.ExchangeGatewayServicer):
    """The generated base class answers UNIMPLEMENTED for every RPC until the service is built."""
