"""Composition root: config -> server."""

from __future__ import annotations

import logging

from services.exchange_gateway.api.servicer import ExchangeGatewayServicer
from services.exchange_gateway.config import Config
from shared.logs import setup_logging
from shared.server import Registration, create_server, run_until_signal
from trading.gateway.v1 import gateway_service_pb2_grpc

SERVICE_NAME = "trading.gateway.v1.ExchangeGateway"

log = logging.getLogger("exchange_gateway")


async def main(config: Config | None = None) -> None:
    """Run the service until SIGTERM or SIGINT."""
    config = config or Config.from_env()
    setup_logging("exchange_gateway", config.log_level)
    registration = Registration(SERVICE_NAME, gateway_service_pb2_grpc.add_ExchangeGatewayServicer_to_server, ExchangeGatewayServicer())
    server, port, health = await create_server(config.listen_addr, [registration])
    log.info("listening", extra={"addr": config.listen_addr, "port": port})
    await run_until_signal(server, health)
