"""The user data stream over the WebSocket API: ``userDataStream.subscribe.signature``.

The listenKey endpoints are gone (spot, 2026-02-20); the WebSocket API subscription works with
any key type (HMAC, Ed25519, RSA) and is signed with the configured key's ``Signer``. The
connection answers the server's pings (aiohttp autoping) and sends its own (``heartbeat``) so a
dead connection is noticed; any failure, ``serverShutdown`` or ``eventStreamTerminated``
reconnects with exponential back-off and jitter. After every successful subscription
``on_subscribed`` runs (the REST reconciliation that covers whatever was missed while
disconnected); it runs as its own task so that reading (and ponging) never stops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import aiohttp

from services.exchange_gateway.adapters.binance.clock import ExchangeClock
from services.exchange_gateway.adapters.binance.rate_limiter import Cost, Priority, RateLimiter
from services.exchange_gateway.adapters.binance.signing import Signer, sign_ws
from shared.ids import new_ulid

log = logging.getLogger("exchange_gateway.user_stream")

SUBSCRIBE = "userDataStream.subscribe.signature"
_WANTED = ("executionReport", "eventStreamTerminated", "serverShutdown")
# Connecting costs 2 weight and the subscription request 2 (web-socket-api.md).
CONNECT_COST = Cost(weight=4, raw=2)


class SubscribeError(Exception):
    """The exchange refused the subscription."""

    def __init__(self, code: int | None, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class UserDataStream:
    """Keeps one subscribed WebSocket API connection and hands every event to ``on_event``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        url: str,
        api_key: str,
        signer: Signer,
        clock: ExchangeClock,
        limiter: RateLimiter,
        resync: Callable[[], Awaitable[Any]],
        recv_window_ms: int = 5000,
        heartbeat_s: float = 20.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
    ):
        self.session = session
        self.url = url
        self._api_key = api_key
        self._signer = signer
        self.clock = clock
        self.limiter = limiter
        self.resync = resync
        self.recv_window_ms = recv_window_ms
        self.heartbeat_s = heartbeat_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.connected = asyncio.Event()
        self.connects = 0
        self.events = 0
        self._after: asyncio.Task[None] | None = None

    async def run(
        self,
        on_event: Callable[[dict[str, Any]], None],
        on_subscribed: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Connect, subscribe and read until cancelled, reconnecting after any failure."""
        delay = self.reconnect_min_s
        while True:
            try:
                await self.limiter.acquire(Priority.QUERY, CONNECT_COST)
                async with self.session.ws_connect(
                    self.url, heartbeat=self.heartbeat_s, autoping=True, max_msg_size=16 * 1024 * 1024
                ) as ws:
                    await self._subscribe(ws)
                    self.connects += 1
                    self.connected.set()
                    delay = self.reconnect_min_s
                    log.info("user data stream subscribed", extra={"connects": self.connects})
                    self._after = asyncio.create_task(on_subscribed(), name="user-stream-reconcile")
                    await self._read(ws, on_event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("user data stream failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            finally:
                self.connected.clear()
            # Full jitter keeps many reconnecting clients from arriving together.
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(self.reconnect_max_s, delay * 2)

    async def _subscribe(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        for attempt in range(2):
            params: dict[str, Any] = {
                "apiKey": self._api_key,
                "recvWindow": self.recv_window_ms,
                "timestamp": self.clock.now_ms(),
            }
            params["signature"] = sign_ws(self._signer, params)
            request_id = new_ulid()
            await ws.send_str(json.dumps({"id": request_id, "method": SUBSCRIBE, "params": params}))
            while True:
                msg = await asyncio.wait_for(ws.receive(), timeout=10.0)
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    raise ConnectionError(f"connection closed while subscribing ({msg.type.name})")
                data = json.loads(msg.data)
                if data.get("id") == request_id:
                    break
            if data.get("status") == 200:
                return
            error = data.get("error") or {}
            code = error.get("code")
            if code == -1021 and attempt == 0:
                await self.resync()
                continue
            raise SubscribeError(code, str(error.get("msg", "")))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, on_event: Callable[[dict[str, Any]], None]) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                text = msg.data
                if not any(kind in text for kind in _WANTED):
                    continue  # balance updates and the like: not journaled, not worth parsing
                data = json.loads(text)
                event = data.get("event") if "event" in data else (data if "e" in data else None)
                if not isinstance(event, dict):
                    continue  # answers to requests, rate limit notes
                kind = event.get("e")
                if kind in ("eventStreamTerminated", "serverShutdown"):
                    log.warning("user data stream ended by the exchange", extra={"event": kind})
                    return
                self.events += 1
                on_event(event)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"websocket error: {ws.exception()}")
        log.warning("user data stream closed by the exchange")
