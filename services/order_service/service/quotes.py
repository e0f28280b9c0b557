"""Market data for users: ListSymbols, GetTicker, GetOrderBook and WatchTickers, over the gateway.

The gateway keeps each symbol's tickers and book from Binance's market data streams (one subscription per
symbol, however many ask), so a ticker or a book is an in-memory answer there and costs the exchange nothing per
user. Symbols come from the gateway's rules (ListSymbolRules), kept for ``symbols_ttl`` seconds and shared by
concurrent callers. Watchers share one gateway WatchTickers stream per symbol: the first watcher of a symbol opens
it, the last one to leave closes it, and each watcher holds at most one pending ticker per symbol, so a slow
reader gets the newest prices, never a growing backlog. A gateway stream that fails is opened again with back-off
while anyone watches; the watchers keep their streams and wait.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from services.order_service.domain.market_data import OrderBook, SymbolInfo, Ticker, symbol_info
from services.order_service.domain.placement import SYMBOL
from services.order_service.service.deadline import Deadline
from services.order_service.service.ports import GatewayPort
from shared.errors import DomainError, InvalidArgument, NotFound
from shared.paging import decode_page_token, encode_page_token, page_limit

log = logging.getLogger("order_service.quotes")

MAX_WATCH_SYMBOLS = 20
DEFAULT_DEPTH = 10
MAX_DEPTH = 100
_SYMBOLS_FILTER = "symbols"


class QuoteSource(Protocol):
    """The gateway's tickers and books. Failures raise ``shared.errors`` exceptions (NotFound: unknown symbol)."""

    async def get_ticker(self, symbol: str, timeout: float) -> Ticker: ...

    async def get_order_book(self, symbol: str, depth: int, timeout: float) -> OrderBook: ...

    def watch_tickers(self, symbols: list[str]) -> AsyncIterator[Ticker]: ...


@dataclass(frozen=True)
class SymbolsPage:
    """One page of symbols and the token of the next one ('' on the last page)."""

    symbols: list[SymbolInfo]
    next_page_token: str


class TickerWatch:
    """One watcher: the newest undelivered ticker per symbol, in the order the symbols changed."""

    def __init__(self) -> None:
        self._pending: dict[str, Ticker] = {}
        self._delivered: dict[str, Ticker] = {}
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, ticker: Ticker) -> None:
        """Queue ``ticker`` in place of any older one of its symbol (nothing if the reader has these figures)."""
        symbol = ticker.symbol
        self._pending.pop(symbol, None)
        delivered = self._delivered.get(symbol)
        if delivered is not None and _figures(delivered) == _figures(ticker):
            return
        self._pending[symbol] = ticker
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self) -> Ticker | None:
        """The next ticker to deliver; None once the watch is closed."""
        while not self._pending:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        symbol = next(iter(self._pending))
        ticker = self._pending.pop(symbol)
        self._delivered[symbol] = ticker
        return ticker


def _figures(ticker: Ticker) -> tuple[object, ...]:
    return (ticker.last_price, ticker.bid_price, ticker.bid_quantity, ticker.ask_price, ticker.ask_quantity)


@dataclass
class _Feed:
    """One symbol's gateway stream and the watchers it feeds."""

    symbol: str
    watchers: set[TickerWatch] = field(default_factory=set)
    latest: Ticker | None = None
    task: asyncio.Task[None] | None = None


class Quotes:
    """Symbols, tickers and books for users; watchers fanned out from one gateway stream per symbol."""

    def __init__(
        self,
        gateway: GatewayPort,
        source: QuoteSource,
        *,
        symbols_ttl: float = 60.0,
        timeout: float = 3.0,
        retry_max: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.gateway = gateway
        self.source = source
        self.symbols_ttl = symbols_ttl
        self.timeout = timeout
        self.retry_max = retry_max
        self.clock = clock
        self._symbols: tuple[float, list[SymbolInfo]] | None = None
        self._symbols_fetch: asyncio.Task[list[SymbolInfo]] | None = None
        self._feeds: dict[str, _Feed] = {}
        self._watches: set[TickerWatch] = set()

    # ------------------------------------------------------------------ symbols

    async def symbols(self, size: int, token: str) -> SymbolsPage:
        """One page of the symbols the exchange lists, sorted by symbol."""
        limit = page_limit(size)
        after = str(decode_page_token(token, _SYMBOLS_FILTER)) if token else ""
        remaining = [info for info in await self._symbol_list() if info.symbol > after]
        page = remaining[:limit]
        more = len(remaining) > limit
        return SymbolsPage(page, encode_page_token(page[-1].symbol, _SYMBOLS_FILTER) if more else "")

    async def _symbol_list(self) -> list[SymbolInfo]:
        cached = self._symbols
        if cached is not None and cached[0] > self.clock():
            return cached[1]
        if self._symbols_fetch is None:
            self._symbols_fetch = asyncio.create_task(self._load_symbols(), name="list-symbols")
            self._symbols_fetch.add_done_callback(self._symbols_loaded)
        return await asyncio.shield(self._symbols_fetch)

    async def _load_symbols(self) -> list[SymbolInfo]:
        rules = await self.gateway.list_symbol_rules(self.timeout)
        infos = sorted((symbol_info(r) for r in rules), key=lambda info: info.symbol)
        self._symbols = (self.clock() + self.symbols_ttl, infos)
        return infos

    def _symbols_loaded(self, task: asyncio.Task[list[SymbolInfo]]) -> None:
        self._symbols_fetch = None
        if not task.cancelled():
            task.exception()  # seen here; the callers waiting get it too

    # ------------------------------------------------------------------ tickers and books

    async def ticker(self, symbol: str, deadline: Deadline) -> Ticker:
        """The symbol's latest prices."""
        _check(symbol, "symbol")
        try:
            return await self.source.get_ticker(symbol, deadline.left(self.timeout))
        except NotFound:
            raise _unknown(symbol) from None

    async def order_book(self, symbol: str, depth: int, deadline: Deadline) -> OrderBook:
        """The top ``depth`` levels per side (0 means 10)."""
        _check(symbol, "symbol")
        depth = depth or DEFAULT_DEPTH
        if not 1 <= depth <= MAX_DEPTH:
            raise InvalidArgument("depth", f"must be between 1 and {MAX_DEPTH} (0 means {DEFAULT_DEPTH})")
        try:
            return await self.source.get_order_book(symbol, depth, deadline.left(self.timeout))
        except NotFound:
            raise _unknown(symbol) from None

    async def watch(self, symbols: Iterable[str]) -> AsyncIterator[Ticker]:
        """Check the request, then return the stream: the current prices of each symbol, then every change,
        until the caller leaves or the service stops."""
        wanted = list(dict.fromkeys(symbols))
        if not wanted:
            raise InvalidArgument("symbols", "name at least one symbol, for example BTCUSDT")
        if len(wanted) > MAX_WATCH_SYMBOLS:
            raise InvalidArgument("symbols", f"at most {MAX_WATCH_SYMBOLS} symbols per watch, got {len(wanted)}")
        for symbol in wanted:
            _check(symbol, "symbols")
        listed = {info.symbol for info in await self._symbol_list()}
        for symbol in wanted:
            if symbol not in listed:
                raise _unknown(symbol)
        return self._stream(wanted)

    async def _stream(self, wanted: list[str]) -> AsyncIterator[Ticker]:
        watch = TickerWatch()
        self._watches.add(watch)
        for symbol in wanted:
            feed = self._feeds.get(symbol)
            if feed is None:
                feed = self._feeds[symbol] = _Feed(symbol)
                feed.task = asyncio.create_task(self._follow(feed), name=f"tickers-{symbol}")
            feed.watchers.add(watch)
            if feed.latest is not None:
                watch.offer(feed.latest)
        try:
            while True:
                ticker = await watch.next()
                if ticker is None:
                    return
                yield ticker
        finally:
            self._watches.discard(watch)
            for symbol in wanted:
                feed = self._feeds.get(symbol)
                if feed is None:
                    continue
                feed.watchers.discard(watch)
                if not feed.watchers:
                    del self._feeds[symbol]
                    if feed.task is not None:
                        feed.task.cancel()

    async def _follow(self, feed: _Feed) -> None:
        """Keep one gateway stream of the symbol open while anyone watches it, and fan its tickers out."""
        delay = 0.2
        while True:
            try:
                async for ticker in self.source.watch_tickers([feed.symbol]):
                    delay = 0.2
                    feed.latest = ticker
                    for watch in list(feed.watchers):
                        watch.offer(ticker)
                log.warning("the gateway ended a ticker stream", extra={"symbol": feed.symbol})
            except DomainError as exc:
                log.warning("gateway ticker stream failed", extra={"symbol": feed.symbol, "error": exc.message})
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(self.retry_max, delay * 2)

    def close(self) -> None:
        """End every watch and every gateway stream (the service is stopping)."""
        for watch in list(self._watches):
            watch.close()
        for feed in self._feeds.values():
            if feed.task is not None:
                feed.task.cancel()

    @property
    def feeds(self) -> list[str]:
        """The symbols with a gateway ticker stream open now."""
        return list(self._feeds)


def _check(symbol: str, field_name: str) -> None:
    if not symbol:
        raise InvalidArgument(field_name, "is required, for example BTCUSDT")
    if not SYMBOL.match(symbol):
        raise InvalidArgument(field_name, f"{symbol!r} is not a symbol: upper-case letters and digits, like BTCUSDT")


def _unknown(symbol: str) -> NotFound:
    return NotFound(f"symbol {symbol} is not listed (ListSymbols shows those that are)", reason="UNKNOWN_SYMBOL")
