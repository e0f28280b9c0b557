"""What the simulator's two WebSocket servers (market streams and the WebSocket API) do alike.

Each client connection has an ordered outgoing queue that a task of its own writes, so a slow client
never holds up the publisher; one that falls ``MAX_QUEUED`` messages behind is dropped. The server
pings every ``ws_ping_interval_s`` and drops a client that has not answered for ``ws_pong_timeout_s``,
and both servers refuse connection attempts past ``ws_connections_per_5m`` in five minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import WSMsgType, web

from services.exchange_simulator import errors
from services.exchange_simulator.rate_limits import FixedWindow

if TYPE_CHECKING:
    from services.exchange_simulator.config import SimConfig

log = logging.getLogger(__name__)

MAX_QUEUED = 10_000
"""A client this far behind is disconnected rather than buffered without bound."""


def dumps(body: Any) -> str:
    """JSON as Binance writes it: compact, UTF-8 as it is."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


class Hub(Protocol):
    connections: Any


class Connection:
    """One client connection: its outgoing queue and whether it is still up."""

    what = "WebSocket client"
    """How the logs name this server's clients."""
    log = log
    """The server module's logger, which logs what happens to its clients."""

    def __init__(self, hub: Hub, ws: web.WebSocketResponse, transport: asyncio.Transport | None, now: float):
        self.hub = hub
        self.ws = ws
        self.transport = transport
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.alive = True
        self.last_pong = now

    def send_text(self, text: str) -> None:
        if not self.alive:
            return
        if self.queue.qsize() >= MAX_QUEUED:
            self.log.warning("%s too slow; disconnecting it", self.what)
            self.abort()
            return
        self.queue.put_nowait(text)

    def abort(self) -> None:
        """Drop the connection at once, with no close frame (what a network failure looks like)."""
        self.alive = False
        self.hub.connections.discard(self)
        if self.transport is not None:
            self.transport.abort()
        self.queue.put_nowait(None)

    def admits(self, kind: WSMsgType) -> bool:
        """Whether the connection stays up after receiving a frame of ``kind`` (a server may limit the rate)."""
        return True

    async def write_loop(self) -> None:
        while True:
            text = await self.queue.get()
            if text is None or not self.alive:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return


def refuse_connect(now: int, refuse_until: int, connects: FixedWindow, config: SimConfig) -> web.Response | None:
    """The answer to a connection attempt the server refuses (dropping all, or too many attempts), else None."""
    if now < refuse_until:
        return web.json_response(errors.internal_error().body(), status=503)
    if connects.add(now) > config.ws_connections_per_5m:
        return web.json_response(
            {
                "code": -1003,
                "msg": f"Too many connection attempts; current limit is {config.ws_connections_per_5m} per 5 MINUTE.",
            },
            status=429,
            headers={"Retry-After": str(max(1, (connects.end(now) - now) // 1000))},
        )
    return None


async def converse(conn: Connection, config: SimConfig, on_text: Callable[[str], None], invalid_json: str) -> None:
    """Serve the prepared connection ``conn`` until it closes, with its writer and pinger alongside.

    Texts go to ``on_text``, pings are answered and pongs noted; a binary frame is answered with
    ``invalid_json``, as Binance does.
    """
    loop = asyncio.get_running_loop()
    conn.hub.connections.add(conn)
    writer = loop.create_task(conn.write_loop())
    pinger = loop.create_task(ping_loop(conn, config))
    try:
        async for message in conn.ws:
            if not conn.admits(message.type):
                break
            if message.type == WSMsgType.TEXT:
                on_text(message.data)
            elif message.type == WSMsgType.PING:
                await conn.ws.pong(message.data)
            elif message.type == WSMsgType.PONG:
                conn.last_pong = loop.time()
            elif message.type == WSMsgType.BINARY:
                conn.send_text(invalid_json)
    except ConnectionError:
        pass
    finally:
        conn.alive = False
        conn.hub.connections.discard(conn)
        pinger.cancel()
        writer.cancel()


async def ping_loop(conn: Connection, config: SimConfig) -> None:
    """Ping the client every ``ws_ping_interval_s``; drop it when its last pong is too old."""
    loop = asyncio.get_running_loop()
    while conn.alive:
        await asyncio.sleep(config.ws_ping_interval_s)
        if not conn.alive:
            return
        if loop.time() - conn.last_pong > config.ws_pong_timeout_s:
            conn.log.info("%s did not answer pings; disconnecting it", conn.what)
            conn.abort()
            return
        try:
            await conn.ws.ping(b"")
        except (ConnectionError, RuntimeError):
            return


async def close_politely(connections: Iterable[Connection]) -> None:
    """Close every connection with 1001 (server shutdown)."""
    for conn in list(connections):
        conn.alive = False
        conn.queue.put_nowait(None)
        with contextlib.suppress(Exception):
            await conn.ws.close(code=1001, message=b"server shutdown")
