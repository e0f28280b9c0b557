"""Composition: the aiohttp application (REST, WebSocket API, market data streams, control endpoints) and
``start_simulator`` for tests."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from services.exchange_simulator import control, rest, streams
from services.exchange_simulator.config import SimConfig
from services.exchange_simulator.matching import Exchange
from services.exchange_simulator.simulator import Simulator
from services.exchange_simulator.streams import StreamHub

__all__ = ["RunningSimulator", "SimConfig", "build_app", "start_simulator"]

log = logging.getLogger(__name__)

WS_API_PATH = "/ws-api/v3"


def build_app(sim: Simulator, market_streams: StreamHub | None = None) -> web.Application:
    """The aiohttp application serving ``sim`` (and its market data streams through ``market_streams``)."""
    app = web.Application(client_max_size=1 << 20)
    rest.add_routes(app, sim)
    app.router.add_get(WS_API_PATH, sim.hub.handle)
    streams.add_routes(app, market_streams or StreamHub(sim))
    control.add_routes(app, sim)
    return app


@dataclass
class RunningSimulator:
    """A simulator listening on a port; ``exchange`` is its in-memory state, for assertions."""

    simulator: Simulator
    runner: web.AppRunner
    host: str
    port: int
    streams: StreamHub

    @property
    def base_url(self) -> str:
        """Binance's base URL form: the REST API is at ``{base_url}/api/v3/...``."""
        return f"http://{self.host}:{self.port}"

    @property
    def ws_api_url(self) -> str:
        return f"ws://{self.host}:{self.port}{WS_API_PATH}"

    @property
    def stream_url(self) -> str:
        """Binance's market data stream base form: raw streams at ``{stream_url}/ws/...``, combined at ``/stream``."""
        return f"ws://{self.host}:{self.port}"

    @property
    def exchange(self) -> Exchange:
        return self.simulator.exchange

    async def stop(self) -> None:
        """Stop the random walk, close WebSocket connections and the listening socket."""
        await self.streams.close()
        await self.simulator.stop()
        await self.runner.cleanup()


async def start_simulator(config: SimConfig) -> RunningSimulator:
    """Bind and start a simulator (port 0 picks a free port). Raises OSError if the port is taken."""
    sim = Simulator(config)
    market_streams = StreamHub(sim)
    runner = web.AppRunner(build_app(sim, market_streams), access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_port=False)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    port = int(runner.addresses[0][1])
    await sim.start()
    await market_streams.start()
    host = "127.0.0.1" if config.host in ("", "0.0.0.0") else config.host
    log.info("exchange simulator listening", extra={"host": config.host, "port": port})
    return RunningSimulator(simulator=sim, runner=runner, host=host, port=port, streams=market_streams)
