"""The WebSocket API at ``/ws-api/v3``: ping, time, and the user data stream by ``userDataStream.subscribe.signature``.

Requests are ``{"id", "method", "params"}``; answers ``{"id", "status", "result" | "error", "rateLimits"}``. Events
go to every connection subscribed for the account, wrapped as ``{"subscriptionId", "event"}``. A connection that
is down receives nothing: events are not queued for it (a client reconciles over REST after reconnecting, as on
Binance). The server sends a ping frame every ``ws_ping_interval_s`` and drops a client that has not answered with
a pong for ``ws_pong_timeout_s``. Connecting costs 2 weight; at most ``ws_connections_per_5m`` connections per
5 minutes are accepted.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from services.exchange_simulator import errors, signing, wire
from services.exchange_simulator.errors import BinanceError
from services.exchange_simulator.matching import Event
from services.exchange_simulator.rate_limits import FIVE_MINUTES_MS, FixedWindow
from services.exchange_simulator.websocket import Connection, close_politely, converse, dumps, refuse_connect

if TYPE_CHECKING:
    from services.exchange_simulator.simulator import Simulator

log = logging.getLogger(__name__)

CONNECT_WEIGHT = 2


class WsConnection(Connection):
    """One client connection: an ordered outgoing queue (answers and events) and its subscription."""

    what = "WebSocket API client"
    log = log

    def __init__(self, hub: WsHub, ws: web.WebSocketResponse, transport: asyncio.Transport | None, now: float):
        super().__init__(hub, ws, transport, now)
        self.subscription_id: int | None = None
        self.next_subscription_id = 0
        self.follow_ups: list[str] = []


class WsHub:
    """All WebSocket API connections of the simulator."""

    def __init__(self, sim: Simulator):
        self.sim = sim
        self.connections: set[WsConnection] = set()
        self.refuse_until = 0
        self._connects = FixedWindow(FIVE_MINUTES_MS)
        self._methods: dict[str, tuple[int, Callable[[WsConnection, dict[str, Any], int], Any]]] = {
            "ping": (1, self._ping),
            "time": (1, self._time),
            "userDataStream.subscribe.signature": (2, self._subscribe),
            "userDataStream.unsubscribe": (2, self._unsubscribe),
            "session.subscriptions": (2, self._subscriptions),
        }

    # ------------------------------------------------------------------ events

    def broadcast(self, events: list[Event]) -> None:
        """Send events to every subscribed connection, in order."""
        targets = [c for c in self.connections if c.subscription_id is not None and c.alive]
        if not targets:
            return
        encoded = [dumps(wire.event_payload(event)) for event in events]
        for conn in targets:
            prefix = f'{{"subscriptionId":{conn.subscription_id},"event":'
            for text in encoded:
                conn.send_text(prefix + text + "}")

    def drop_all(self, refuse_ms: int = 0) -> int:
        """Abort every connection now; refuse new ones for ``refuse_ms``. Returns how many were dropped."""
        dropped = list(self.connections)
        for conn in dropped:
            conn.abort()
        if refuse_ms > 0:
            self.refuse_until = self.sim.clock() + refuse_ms
        return len(dropped)

    async def close_all(self) -> None:
        """Close every connection politely (server shutdown)."""
        await close_politely(self.connections)
        self.connections.clear()

    # ------------------------------------------------------------------ connections

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler of ``/ws-api/v3``."""
        sim = self.sim
        now = sim.clock()
        refusal = refuse_connect(now, self.refuse_until, self._connects, sim.config)
        if refusal is not None:
            return refusal
        rejection = sim.limiter.admit(CONNECT_WEIGHT, now)
        if rejection is not None:
            return web.json_response(
                {"code": rejection.code, "msg": rejection.msg},
                status=rejection.status,
                headers={"Retry-After": str(rejection.retry_after)},
            )
        ws = web.WebSocketResponse(autoping=False, timeout=2.0, max_msg_size=1 << 20)
        await ws.prepare(request)
        loop = asyncio.get_running_loop()
        conn = WsConnection(self, ws, request.transport, loop.time())
        invalid_json = dumps(self._error(None, BinanceError(-1135, "Invalid JSON Request")))
        await converse(conn, sim.config, lambda text: self._on_text(conn, text), invalid_json)
        return ws

    # ------------------------------------------------------------------ requests

    def _error(self, request_id: Any, error: BinanceError, rate_limits: list[Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"id": request_id, "status": error.status, "error": error.body()}
        if rate_limits is not None:
            body["rateLimits"] = rate_limits
        return body

    def _on_text(self, conn: WsConnection, text: str) -> None:
        sim = self.sim
        try:
            request = json.loads(text)
        except ValueError:
            conn.send_text(dumps(self._error(None, BinanceError(-1135, "Invalid JSON Request"))))
            return
        if not isinstance(request, dict):
            conn.send_text(dumps(self._error(None, BinanceError(-1135, "Invalid JSON Request"))))
            return
        request_id = request.get("id")
        method = request.get("method")
        params = request.get("params") or {}
        entry = self._methods.get(method) if isinstance(method, str) else None
        if entry is None:
            conn.send_text(dumps(self._error(request_id, BinanceError(-1020, "This operation is not supported."))))
            return
        if not isinstance(params, dict):
            conn.send_text(dumps(self._error(request_id, BinanceError(-1135, "Invalid JSON Request"))))
            return
        weight, handler = entry
        now = sim.clock()
        rejection = sim.limiter.admit(weight, now)
        rate_limits = [sim.limiter.weight_limit_status(now)]
        if rejection is not None:
            body = self._error(request_id, BinanceError(rejection.code, rejection.msg, rejection.status), rate_limits)
            body["error"]["data"] = {"serverTime": now, "retryAfter": rejection.retry_at_ms}
            conn.send_text(dumps(body))
            return
        try:
            result = handler(conn, params, now)
        except BinanceError as error:
            conn.send_text(dumps(self._error(request_id, error, rate_limits)))
            return
        conn.send_text(dumps({"id": request_id, "status": 200, "result": result, "rateLimits": rate_limits}))
        while conn.follow_ups:
            conn.send_text(conn.follow_ups.pop(0))

    def _ping(self, conn: WsConnection, params: dict[str, Any], now: int) -> Any:
        return {}

    def _time(self, conn: WsConnection, params: dict[str, Any], now: int) -> Any:
        return {"serverTime": now}

    def _subscribe(self, conn: WsConnection, params: dict[str, Any], now: int) -> Any:
        api_key = params.get("apiKey")
        if not api_key:
            raise errors.mandatory("apiKey")
        signature = params.get("signature")
        if not signature or not isinstance(signature, str):
            raise errors.mandatory("signature")
        verifier = self.sim.verifier(str(api_key))
        if not verifier.verify(signing.ws_payload(params), signature):
            raise errors.bad_signature()
        self.sim.check_time(params.get("timestamp"), params.get("recvWindow"), now)
        if conn.subscription_id is not None:
            raise BinanceError(-2035, "User Data Stream subscription already active.")
        conn.subscription_id = conn.next_subscription_id
        conn.next_subscription_id += 1
        return {"subscriptionId": conn.subscription_id}

    def _unsubscribe(self, conn: WsConnection, params: dict[str, Any], now: int) -> Any:
        wanted = params.get("subscriptionId")
        current = conn.subscription_id
        if wanted is not None and (current is None or wanted != current):
            raise BinanceError(-2036, "User Data Stream subscription not active.")
        if current is not None:
            conn.subscription_id = None
            # Binance closes the stream with this event; it follows the answer on the same connection.
            terminated = {"subscriptionId": current, "event": {"e": "eventStreamTerminated", "E": now}}
            conn.follow_ups.append(dumps(terminated))
        return {}

    def _subscriptions(self, conn: WsConnection, params: dict[str, Any], now: int) -> Any:
        if conn.subscription_id is None:
            return []
        return [{"subscriptionId": conn.subscription_id}]
