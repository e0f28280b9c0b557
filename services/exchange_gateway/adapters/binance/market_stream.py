"""Binance's market data streams over one combined-stream connection, subscribed per symbol on demand.

For every symbol someone asks about, the connection subscribes to ``<symbol>@bookTicker`` (best bid and ask, in
real time), ``<symbol>@depth20@100ms`` (the top 20 levels every 100 ms) and ``<symbol>@ticker`` (the last price,
every second). Streams cost no request weight: however many callers want a symbol, the exchange sees one
subscription. The connection opens at the first wanted symbol, at ``<base>/stream`` (payloads arrive wrapped as
``{"stream", "data"}``), and symbols are added and removed with live ``SUBSCRIBE`` / ``UNSUBSCRIBE`` requests.

Binance drops a connection that sends more than 5 messages a second (pings and pongs included) and allows 1024
streams per connection: subscription changes are batched and sent at most every ``SEND_INTERVAL_S``, and at most
``MAX_SYMBOLS`` symbols are subscribed (the others are served by REST). The connection answers the server's pings
(aiohttp autoping) and sends its own (``heartbeat``) so a dead connection is noticed; any failure reconnects with
exponential back-off and jitter and subscribes again to every wanted symbol. A symbol is live from the
exchange's acknowledgement of its subscription until the connection ends (``on_live`` says so both ways).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Callable, Iterable
from typing import Any

import aiohttp

from services.exchange_gateway.adapters.binance.clock import ExchangeClock
from services.exchange_gateway.adapters.binance.schemas import dec
from services.exchange_gateway.domain.market_data import (
    BookLevel,
    BookTop,
    DayTicker,
    MarketUpdate,
    OrderBook,
    Source,
)

log = logging.getLogger("exchange_gateway.market_stream")

STREAM_DEPTH = 20
"""Levels of the partial depth stream (Binance offers 5, 10 and 20)."""
KINDS = ("bookTicker", f"depth{STREAM_DEPTH}@100ms", "ticker")
MAX_STREAMS = 1024
MAX_SYMBOLS = MAX_STREAMS // len(KINDS)
SEND_INTERVAL_S = 0.5
"""At most two requests a second of our own, well inside Binance's 5 messages a second with pings and pongs."""
BATCH_SYMBOLS = 30
"""Symbols per SUBSCRIBE / UNSUBSCRIBE request."""


def stream_names(symbol: str) -> list[str]:
    """The stream names of one symbol (Binance wants them lowercase)."""
    lower = symbol.lower()
    return [f"{lower}@{kind}" for kind in KINDS]


def stream_base(url: str) -> str:
    """The streams' base URL, accepting it also with Binance's ``/ws`` or ``/stream`` path."""
    base = url.rstrip("/")
    for suffix in ("/stream", "/ws"):
        base = base.removesuffix(suffix)
    return base


def _levels(raw: Any) -> tuple[BookLevel, ...]:
    return tuple(BookLevel(dec(price), dec(quantity)) for price, quantity, *_ in raw or ())


def parse_update(stream: str, data: dict[str, Any], now_ms: int) -> MarketUpdate | None:
    """The domain update of one stream payload (None for streams the gateway does not use)."""
    name, _, kind = stream.partition("@")
    symbol = name.upper()
    if kind == "bookTicker":
        return BookTop(
            symbol=str(data.get("s") or symbol),
            update_id=int(data["u"]),
            bid_price=dec(data.get("b")),
            bid_quantity=dec(data.get("B")),
            ask_price=dec(data.get("a")),
            ask_quantity=dec(data.get("A")),
            time_ms=now_ms,
        )
    if kind.startswith("depth"):
        return OrderBook(
            symbol=symbol,
            bids=_levels(data.get("bids")),
            asks=_levels(data.get("asks")),
            update_id=int(data["lastUpdateId"]),
            time_ms=now_ms,
            source=Source.STREAM,
        )
    if kind == "ticker" and data.get("e") == "24hrTicker":
        return DayTicker(
            symbol=str(data.get("s") or symbol),
            last_price=dec(data.get("c")),
            bid_price=dec(data.get("b")),
            bid_quantity=dec(data.get("B")),
            ask_price=dec(data.get("a")),
            ask_quantity=dec(data.get("A")),
            time_ms=int(data.get("E") or now_ms),
        )
    return None


class MarketStream:
    """One connection to Binance's market data streams, following the set of wanted symbols."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        url: str,
        clock: ExchangeClock,
        on_update: Callable[[MarketUpdate], None],
        on_live: Callable[[Iterable[str], bool], None],
        heartbeat_s: float = 20.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
    ):
        self.session = session
        self.url = f"{stream_base(url)}/stream"
        self.clock = clock
        self.on_update = on_update
        self.on_live = on_live
        self.heartbeat_s = heartbeat_s
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = reconnect_max_s
        self.connected = asyncio.Event()
        self.connects = 0
        self._wanted: dict[str, None] = {}
        self._sent: set[str] = set()  # subscribed or asked for on this connection
        self._live: set[str] = set()  # acknowledged on this connection
        self._pending: dict[int, tuple[str, list[str]]] = {}
        self._next_id = 0
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ what is wanted

    def want(self, symbol: str) -> None:
        """Follow ``symbol`` (subscribes at the next chance; nothing if it is already followed)."""
        if symbol not in self._wanted:
            self._wanted[symbol] = None
            self._changed.set()

    def unwant(self, symbol: str) -> None:
        """Stop following ``symbol``."""
        if symbol not in self._wanted and symbol not in self._sent:
            return
        self._wanted.pop(symbol, None)
        if symbol in self._live:
            self._live.discard(symbol)
            self.on_live([symbol], False)
        self._changed.set()

    def is_live(self, symbol: str) -> bool:
        """Whether the exchange confirmed the symbol's subscription on the open connection."""
        return symbol in self._live

    @property
    def wanted(self) -> list[str]:
        return list(self._wanted)

    # ------------------------------------------------------------------ the connection

    async def run(self) -> None:
        """Connect once something is wanted, subscribe, read; reconnect after any failure, until cancelled."""
        delay = self.reconnect_min_s
        while True:
            while not self._wanted:
                self._changed.clear()
                await self._changed.wait()
            try:
                async with self.session.ws_connect(
                    self.url, heartbeat=self.heartbeat_s, autoping=True, max_msg_size=16 * 1024 * 1024
                ) as ws:
                    self.connects += 1
                    self.connected.set()
                    delay = self.reconnect_min_s
                    log.info("market data stream connected", extra={"connects": self.connects})
                    sender = asyncio.create_task(self._send_changes(ws), name="market-stream-subscribe")
                    try:
                        await self._read(ws)
                    finally:
                        sender.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await sender
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("market data stream failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            finally:
                self._lost()
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(self.reconnect_max_s, delay * 2)

    def _lost(self) -> None:
        self.connected.clear()
        self._sent.clear()
        self._pending.clear()
        if self._live:
            lost, self._live = self._live, set()
            self.on_live(lost, False)

    async def _send_changes(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Bring the connection's subscriptions to the wanted set, one paced request at a time."""
        while True:
            self._changed.clear()
            wanted = list(self._wanted)[:MAX_SYMBOLS]
            if len(self._wanted) > MAX_SYMBOLS:
                log.warning("more symbols wanted than one stream connection carries; the rest are served by REST")
            add = [s for s in wanted if s not in self._sent][:BATCH_SYMBOLS]
            drop = [s for s in self._sent if s not in self._wanted][:BATCH_SYMBOLS]
            if add:
                await self._request(ws, "SUBSCRIBE", add)
                self._sent.update(add)
            elif drop:
                await self._request(ws, "UNSUBSCRIBE", drop)
                self._sent.difference_update(drop)
            else:
                await self._changed.wait()
                continue
            await asyncio.sleep(SEND_INTERVAL_S)

    async def _request(self, ws: aiohttp.ClientWebSocketResponse, method: str, symbols: list[str]) -> None:
        self._next_id += 1
        self._pending[self._next_id] = (method, symbols)
        params = [name for symbol in symbols for name in stream_names(symbol)]
        await ws.send_str(json.dumps({"method": method, "params": params, "id": self._next_id}))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                self._on_text(msg.data)
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return
            elif msg.type is aiohttp.WSMsgType.ERROR:
                raise ConnectionError(f"websocket error: {ws.exception()}")
        log.warning("market data stream closed by the exchange")

    def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            log.warning("unreadable market data message", extra={"length": len(text)})
            return
        if not isinstance(message, dict):
            return
        if "stream" in message:
            data = message.get("data")
            if not isinstance(data, dict):
                return
            try:
                update = parse_update(str(message["stream"]), data, self.clock.now_ms())
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                log.warning("unreadable market data payload", extra={"stream": message["stream"], "error": str(exc)})
                return
            if update is not None:
                self.on_update(update)
            return
        request_id = message.get("id")
        request = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if request is None:
            return
        method, symbols = request
        if "error" in message:
            log.warning(
                "the exchange refused a market data subscription change",
                extra={"method": method, "symbols": symbols, "error": message["error"]},
            )
            return
        if method == "SUBSCRIBE":
            confirmed = [s for s in symbols if s in self._wanted and s in self._sent and s not in self._live]
            self._live.update(confirmed)
            if confirmed:
                self.on_live(confirmed, True)
