"""``python -m services.exchange_simulator``: serve until SIGTERM or SIGINT, then exit 0."""

from __future__ import annotations

import asyncio
import errno
import logging
import sys

from services.exchange_simulator.app import start_simulator
from services.exchange_simulator.config import SimConfig
from shared.config import ConfigError
from shared.logs import register_secret, setup_logging
from shared.ready import announce_ready
from shared.server import wait_for_signal

log = logging.getLogger("services.exchange_simulator")


async def serve(config: SimConfig) -> int:
    """Run the simulator until a termination signal arrives."""
    try:
        running = await start_simulator(config)
    except ConfigError as error:
        message = f"exchange simulator: {error}"
        log.error(message)
        print(message, file=sys.stderr, flush=True)
        return 2
    except OSError as error:
        reason = "address already in use" if error.errno == errno.EADDRINUSE else (error.strerror or str(error))
        message = f"exchange simulator: cannot listen on {config.host}:{config.port}: {reason}"
        log.error(message)
        print(message, file=sys.stderr, flush=True)
        return 1
    print(
        f"exchange simulator listening on {running.base_url} port={running.port} (WebSocket API {running.ws_api_url})",
        flush=True,
    )
    announce_ready("exchange_simulator", {"http_port": running.port})
    try:
        await wait_for_signal()
    finally:
        await running.stop()
    return 0


def main() -> int:
    try:
        config = SimConfig.from_env()
    except ConfigError as error:
        print(f"exchange simulator: {error}", file=sys.stderr, flush=True)
        return 2
    setup_logging("exchange_simulator", config.log_level)
    register_secret(config.api_secret)
    try:
        import uvloop

        return uvloop.run(serve(config))
    except ImportError:  # pragma: no cover - uvloop is pinned, but the simulator does not need it
        return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
