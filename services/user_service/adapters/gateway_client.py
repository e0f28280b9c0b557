"""gRPC client of trading.gateway.v1.ExchangeGateway (service token), implementing ``ExchangeAssets``."""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from shared.client import ServiceCaller
from trading.gateway.v1 import gateway_pb2, gateway_service_pb2, gateway_service_pb2_grpc


def assets_of(rules: Iterable[gateway_pb2.SymbolRules]) -> frozenset[str]:
    """The base and quote assets of the symbols."""
    return frozenset(asset for r in rules for asset in (r.base_asset, r.quote_asset) if asset)


class GrpcGatewayAssets:
    """The assets the exchange lists, from the gateway's ListSymbolRules over one shared channel."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str):
        self.stub = gateway_service_pb2_grpc.ExchangeGatewayStub(channel)
        self.call = ServiceCaller(service_token, what="exchange gateway")

    async def list_assets(self, timeout: float) -> frozenset[str]:
        """Every asset some listed symbol trades; a failed call raises a ``shared.errors.DomainError``."""
        response = await self.call(
            self.stub.ListSymbolRules, gateway_service_pb2.ListSymbolRulesRequest(), timeout=timeout
        )
        return assets_of(response.rules)
