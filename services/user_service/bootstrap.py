"""Composition root: config -> server."""

from __future__ import annotations

import logging

from services.user_service.api.servicer import UserServiceServicer
from services.user_service.config import Config
from shared.logs import setup_logging
from shared.server import Registration, create_server, run_until_signal
from trading.user.v1 import user_service_pb2_grpc

SERVICE_NAME = "trading.user.v1.UserService"

log = logging.getLogger("user_service")


async def main(config: Config | None = None) -> None:
    """Run the service until SIGTERM or SIGINT."""
    config = config or Config.from_env()
    setup_logging("user_service", config.log_level)
    registration = Registration(SERVICE_NAME, user_service_pb2_grpc.add_UserServiceServicer_to_server, UserServiceServicer())
    server, port, health = await create_server(config.listen_addr, [registration])
    log.info("listening", extra={"addr": config.listen_addr, "port": port})
    await run_until_signal(server, health)
