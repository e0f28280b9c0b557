"""Composition root: config -> server."""

from __future__ import annotations

import logging

from services.order_service.api.servicer import OrderServiceServicer
from services.order_service.config import Config
from shared.logs import setup_logging
from shared.server import Registration, create_server, run_until_signal
from trading.order.v1 import order_service_pb2_grpc

SERVICE_NAME = "trading.order.v1.OrderService"

log = logging.getLogger("order_service")


async def main(config: Config | None = None) -> None:
    """Run the service until SIGTERM or SIGINT."""
    config = config or Config.from_env()
    setup_logging("order_service", config.log_level)
    registration = Registration(SERVICE_NAME, order_service_pb2_grpc.add_OrderServiceServicer_to_server, OrderServiceServicer())
    server, port, health = await create_server(config.listen_addr, [registration])
    log.info("listening", extra={"addr": config.listen_addr, "port": port})
    await run_until_signal(server, health)
