"""Binance's market data streams: raw at ``/ws/<streamName>`` and combined at ``/stream?streams=<a>/<b>``.

Streams served (symbols lowercase in the names, as on Binance):

- ``<symbol>@bookTicker``: best bid and ask with their quantities, pushed when one of them changes (checked
  every 100 ms; Binance pushes in real time). No event time on spot: ``{u, s, b, B, a, A}``.
- ``<symbol>@depth<5|10|20>`` every 1000 ms and ``<symbol>@depth<levels>@100ms`` every 100 ms: the top of the
  synthetic book, ``{lastUpdateId, bids, asks}`` (the symbol is only in the stream name).
- ``<symbol>@ticker``: the 24-hour rolling statistics (event ``24hrTicker``) every 1000 ms.

Names the simulator does not serve are accepted and stay silent. A raw connection gets each payload as it is;
a combined one gets ``{"stream": <name>, "data": <payload>}`` (``SET_PROPERTY combined`` switches).
Requests ``{"method", "params", "id"}``: ``SUBSCRIBE``, ``UNSUBSCRIBE``, ``LIST_SUBSCRIPTIONS``, ``SET_PROPERTY``,
``GET_PROPERTY``; answers ``{"result", "id"}``, errors ``{"error": {"code", "msg"}, "id"}`` with Binance's codes.
A connection that sends more than 5 messages (text, ping or pong frames) in a second is dropped. The server pings
every ``ws_ping_interval_s`` and drops a client that has not answered for ``ws_pong_timeout_s``. At most
``ws_connections_per_5m`` connection attempts are accepted per 5 minutes. Streams cost no request weight.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from services.exchange_simulator import market_data
from services.exchange_simulator.rate_limits import FIVE_MINUTES_MS, SECOND_MS, FixedWindow
from services.exchange_simulator.websocket import Connection, close_politely, converse, dumps, refuse_connect

if TYPE_CHECKING:
    from services.exchange_simulator.simulator import Simulator

log = logging.getLogger(__name__)

TICK_MS = 100
"""The publisher's period: the 100 ms streams go every tick, the 1000 ms ones every ``SLOW_TICKS``."""
SLOW_TICKS = 10
MAX_MESSAGES_PER_SECOND = 5
COUNTED = (WSMsgType.TEXT, WSMsgType.PING, WSMsgType.PONG, WSMsgType.BINARY)
"""The frames a client's message rate counts."""
METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")

_NAME = re.compile(r"^([a-z0-9]+)@(bookTicker|ticker|depth(5|10|20)(@100ms|@1000ms)?)$")
_ID = re.compile(r"^[a-zA-Z0-9]{1,36}$")
_INT64 = 2**63


@dataclass(frozen=True)
class Stream:
    """A stream name the simulator serves: its symbol (exchange spelling), kind, depth levels and speed."""

    name: str
    symbol: str
    kind: str  # "bookTicker", "ticker" or "depth"
    levels: int = 0
    fast: bool = False


def parse_stream(name: str, symbols: Iterable[str]) -> Stream | None:
    """The stream ``name`` stands for, or None when the simulator has no data for it."""
    match = _NAME.match(name)
    if match is None:
        return None
    symbol = match.group(1).upper()
    if symbol not in symbols:
        return None
    kind = match.group(2)
    if kind.startswith("depth"):
        return Stream(name, symbol, "depth", int(match.group(3)), fast=match.group(4) == "@100ms")
    return Stream(name, symbol, kind)


class StreamError(Exception):
    """A request the stream server refuses: Binance's ``{code, msg}``."""

    def __init__(self, code: int, msg: str):
        super().__init__(msg)
        self.code = code
        self.msg = msg


class StreamConnection(Connection):
    """One client: its streams (in subscription order), whether payloads are wrapped, and its outgoing queue."""

    what = "market stream client"
    log = log

    def __init__(self, hub: StreamHub, ws: web.WebSocketResponse, transport: asyncio.Transport | None, now: float):
        super().__init__(hub, ws, transport, now)
        self.combined = False
        self.streams: dict[str, None] = {}
        self.messages = FixedWindow(SECOND_MS)
        self.clock = hub.sim.clock

    def admits(self, kind: WSMsgType) -> bool:
        """At most 5 frames (text, ping, pong or binary) a second: a client that sends more is dropped."""
        if kind in COUNTED and self.messages.add(self.clock()) > MAX_MESSAGES_PER_SECOND:
            log.info("market stream client sent more than 5 messages in a second; disconnecting it")
            self.abort()
            return False
        return True


class StreamHub:
    """Every market stream connection of the simulator and the publisher that feeds them."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self.connections: set[StreamConnection] = set()
        self.refuse_until = 0
        self.messages_sent = 0
        self._connects = FixedWindow(FIVE_MINUTES_MS)
        self._tops: dict[str, market_data.BookTop] = {}
        self._tick = 0
        self._task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ publishing

    async def start(self) -> None:
        """Start the publisher (from the book as it is now: a bookTicker goes out on the first change after this)."""
        now = self.sim.clock()
        for symbol, market in self.sim.exchange.markets.items():
            market_data.observe(market, now)
            self._tops[symbol] = market_data.book_top(market)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._publish_loop(), name="market-streams")

    async def _publish_loop(self) -> None:
        while True:
            await asyncio.sleep(TICK_MS / 1000)
            try:
                self.publish_tick(self.sim.clock())
            except Exception:  # keep publishing; a bug here must not silence every stream
                log.exception("market stream publishing failed")

    def publish_tick(self, now: int) -> None:
        """One tick: observe every price, then send what is due to every subscribed connection."""
        self._tick += 1
        slow = self._tick % SLOW_TICKS == 0
        markets = self.sim.exchange.markets
        changed: set[str] = set()
        for symbol, market in markets.items():
            market_data.observe(market, now)
            top = market_data.book_top(market)
            previous = self._tops.get(symbol)
            if previous is None or (previous.bid, previous.bid_qty, previous.ask, previous.ask_qty) != (
                top.bid,
                top.bid_qty,
                top.ask,
                top.ask_qty,
            ):
                self._tops[symbol] = top
                if previous is not None:
                    changed.add(symbol)
        subscribers: dict[str, list[StreamConnection]] = {}
        for conn in self.connections:
            for name in conn.streams:
                subscribers.setdefault(name, []).append(conn)
        for name, conns in subscribers.items():
            stream = parse_stream(name, markets)
            if stream is None:
                continue
            market = markets[stream.symbol]
            payload: dict[str, Any] | None = None
            if stream.kind == "bookTicker" and stream.symbol in changed:
                payload = market_data.book_ticker_event(market, self._tops[stream.symbol])
            elif stream.kind == "depth" and (stream.fast or slow):
                payload = market_data.depth_payload(market, stream.levels)
            elif stream.kind == "ticker" and slow:
                payload = market_data.ticker_event(market_data.day_stats(market, now))
            if payload is None:
                continue
            raw = dumps(payload)
            wrapped = f'{{"stream":{dumps(name)},"data":{raw}}}'
            for conn in conns:
                conn.send_text(wrapped if conn.combined else raw)
                self.messages_sent += 1

    # ------------------------------------------------------------------ connections

    async def handle_raw(self, request: web.Request) -> web.StreamResponse:
        """``/ws`` and ``/ws/<streamName>[/<streamName>...]``: payloads as they are."""
        names = [n for n in request.match_info.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=False)

    async def handle_combined(self, request: web.Request) -> web.StreamResponse:
        """``/stream?streams=<a>/<b>``: payloads wrapped with their stream name."""
        names = [n for n in request.query.get("streams", "").split("/") if n]
        return await self._serve(request, names, combined=True)

    async def _serve(self, request: web.Request, names: list[str], *, combined: bool) -> web.StreamResponse:
        sim = self.sim
        refusal = refuse_connect(sim.clock(), self.refuse_until, self._connects, sim.config)
        if refusal is not None:
            return refusal
        ws = web.WebSocketResponse(autoping=False, timeout=2.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        conn = StreamConnection(self, ws, request.transport, loop.time())
        conn.combined = combined
        conn.streams = dict.fromkeys(names)
        invalid_json = dumps(_error(None, StreamError(3, "Invalid JSON: expected value")))
        await converse(conn, sim.config, lambda text: self._on_text(conn, text), invalid_json)
        return ws

    def drop_all(self, refuse_ms: int = 0) -> int:
        """Abort every connection now; refuse new ones for ``refuse_ms`` (0 ends a refusal). Returns how many."""
        dropped = list(self.connections)
        for conn in dropped:
            conn.abort()
        self.refuse_until = self.sim.clock() + refuse_ms
        return len(dropped)

    async def close(self) -> None:
        """Stop publishing and close every connection politely (server shutdown)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await close_politely(self.connections)
        self.connections.clear()

    def stats(self) -> dict[str, Any]:
        """Connections, how many subscribe to each stream, and messages sent (for tests and demos)."""
        subscriptions: dict[str, int] = {}
        for conn in self.connections:
            for name in conn.streams:
                subscriptions[name] = subscriptions.get(name, 0) + 1
        return {
            "connections": len(self.connections),
            "subscriptions": dict(sorted(subscriptions.items())),
            "messages_sent": self.messages_sent,
            "refuse_until": self.refuse_until if self.refuse_until > self.sim.clock() else 0,
        }

    # ------------------------------------------------------------------ requests

    def _on_text(self, conn: StreamConnection, text: str) -> None:
        try:
            request = json.loads(text)
        except json.JSONDecodeError as exc:
            error = StreamError(3, f"Invalid JSON: expected value at line {exc.lineno} column {exc.colno}")
            conn.send_text(dumps(_error(None, error)))
            return
        request_id = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict):
                raise StreamError(2, "Invalid request: expected a JSON object")
            request_id = _request_id(request)
            result = self._call(conn, request)
        except StreamError as error:
            conn.send_text(dumps(_error(request_id if _valid_id(request_id) else None, error)))
            return
        conn.send_text(dumps({"result": result, "id": request_id}))

    def _call(self, conn: StreamConnection, request: dict[str, Any]) -> Any:
        method = request.get("method")
        if method is None:
            raise StreamError(2, "Invalid request: missing field `method`")
        if method not in METHODS:
            expected = ", ".join(f"`{m}`" for m in METHODS)
            raise StreamError(2, f"Invalid request: unknown variant `{method}`, expected one of {expected}")
        params = request.get("params")
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
                raise StreamError(2, "Invalid request: params must be a list of stream names")
            for name in params:
                if method == "SUBSCRIBE":
                    conn.streams[name] = None
                else:
                    conn.streams.pop(name, None)
            return None
        if method == "LIST_SUBSCRIPTIONS":
            if params:
                raise StreamError(2, "Invalid request: too many parameters")
            return list(conn.streams)
        if not isinstance(params, list) or not params or not isinstance(params[0], str):
            raise StreamError(2, "Invalid request: property name must be a string")
        if params[0] != "combined":
            raise StreamError(0, "Unknown property")
        if method == "GET_PROPERTY":
            return conn.combined
        if len(params) != 2 or not isinstance(params[1], bool):
            raise StreamError(1, "Invalid value type: expected Boolean")
        conn.combined = params[1]
        return None


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    return isinstance(value, str) and _ID.match(value) is not None


def _request_id(request: dict[str, Any]) -> Any:
    """The request's ``id``: a 64-bit integer, up to 36 letters and digits, or null."""
    value = request.get("id")
    if "id" not in request or not _valid_id(value):
        raise StreamError(2, "Invalid request: request ID must be an unsigned integer")
    return value


def _error(request_id: Any, error: StreamError) -> dict[str, Any]:
    return {"error": {"code": error.code, "msg": error.msg}, "id": request_id}


# ------------------------------------------------------------------------------------------ control


def add_routes(app: web.Application, hub: StreamHub) -> None:
    """Register the stream endpoints and their control endpoints (``/sim/v1/streams``, not Binance's)."""
    app.router.add_get("/ws", hub.handle_raw)
    app.router.add_get("/ws/{streams:.+}", hub.handle_raw)
    app.router.add_get("/stream", hub.handle_combined)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(hub.stats())

    async def drop(request: web.Request) -> web.Response:
        text = await request.text()
        try:
            body = json.loads(text) if text.strip() else {}
        except ValueError:
            return web.json_response({"error": "body is not JSON"}, status=400)
        refuse_ms = body.get("refuse_ms", 0) if isinstance(body, dict) else None
        if isinstance(refuse_ms, bool) or not isinstance(refuse_ms, int) or refuse_ms < 0:
            return web.json_response({"error": "refuse_ms must be a non-negative integer"}, status=400)
        return web.json_response({"dropped": hub.drop_all(refuse_ms), "refuse_ms": refuse_ms})

    app.router.add_get("/sim/v1/streams", stats)
    app.router.add_post("/sim/v1/streams/drop", drop)
