"""Tickers and order books for any number of callers, at the cost of one stream subscription per symbol.

The first request for a symbol (GetTicker, GetOrderBook or WatchTickers) has the stream adapter subscribe to the
symbol's market data streams; from then on every update is kept here, in memory, and served to every caller.
While a symbol's streams are not live (not confirmed yet, reconnecting, refused) answers come from REST snapshots:
one request per symbol and kind at a time, shared by every caller waiting for it and reused for ``rest_ttl_ms``,
so a hundred callers cost the exchange one request's weight per interval, never one per caller. Watchers of a
symbol whose streams are not live are fed from the same shared snapshots, polled every ``rest_ttl_ms``. A symbol
that nobody watches and nobody has asked about for ``idle_ms`` is unsubscribed.

A ticker combines the streams: the last price from the 24-hour ticker (every second), the best bid and ask from
whichever of bookTicker (real time) and the partial depth (every 100 ms) has the newer update id. Each watcher
holds at most one pending ticker per symbol: a slow reader gets the newest prices, never a growing backlog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, Protocol, TypeVar

from services.exchange_gateway.domain.errors import ExchangeError
from services.exchange_gateway.domain.market_data import (
    ZERO,
    BookTop,
    DayTicker,
    MarketUpdate,
    OrderBook,
    Source,
    Ticker,
)
from shared.errors import DomainError, InvalidArgument, Unavailable

log = logging.getLogger("exchange_gateway.quotes")

DEFAULT_DEPTH = 10
MAX_DEPTH = 100
STREAM_DEPTH = 20
"""Levels the partial depth stream carries; deeper books come from REST."""
REST_DEPTH = 100
"""Levels of a REST book snapshot: every depth up to 100 costs the same weight (5), so one snapshot serves all."""
MAX_WATCH_SYMBOLS = 100

T = TypeVar("T")


class MarketStreams(Protocol):
    """The market data streams: follow a symbol, stop following it, and whether its data is live."""

    def want(self, symbol: str) -> None: ...

    def unwant(self, symbol: str) -> None: ...

    def is_live(self, symbol: str) -> bool: ...


class MarketSnapshots(Protocol):
    """REST snapshots of one symbol. Failures raise ``ExchangeError`` (or ``ResourceExhausted`` from the limiter)."""

    async def ticker(self, symbol: str, deadline: float | None = None) -> Ticker: ...

    async def order_book(self, symbol: str, limit: int, deadline: float | None = None) -> OrderBook: ...


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's exception as seen (its waiters may all have gone)."""
    if not task.cancelled():
        task.exception()


class SharedFetch(Generic[T]):
    """At most one fetch per symbol at a time, its result reused for ``ttl_ms`` by every caller."""

    def __init__(
        self,
        fetch: Callable[[str, float | None], Awaitable[T]],
        ttl_ms: float,
        clock: Callable[[], float],
    ):
        self.fetch = fetch
        self.ttl_ms = ttl_ms
        self.clock = clock
        self._values: dict[str, tuple[float, T]] = {}
        self._tasks: dict[str, asyncio.Task[T]] = {}

    async def get(self, symbol: str, deadline: float | None) -> T:
        cached = self._values.get(symbol)
        if cached is not None and self.clock() * 1000 - cached[0] <= self.ttl_ms:
            return cached[1]
        task = self._tasks.get(symbol)
        if task is None:
            task = asyncio.create_task(self._load(symbol, deadline), name=f"market-snapshot-{symbol}")
            self._tasks[symbol] = task

            def done(t: asyncio.Task[T]) -> None:
                self._tasks.pop(symbol, None)
                _retrieve(t)

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def _load(self, symbol: str, deadline: float | None) -> T:
        value = await self.fetch(symbol, deadline)
        self._values[symbol] = (self.clock() * 1000, value)
        return value

    def forget(self, symbol: str) -> None:
        self._values.pop(symbol, None)


class TickerWatch:
    """One watcher: the newest undelivered ticker per symbol, in the order the symbols changed."""

    def __init__(self, symbols: Iterable[str]):
        self.symbols = tuple(symbols)
        self._pending: dict[str, Ticker] = {}
        self._delivered: dict[str, Ticker] = {}
        self._ready = asyncio.Event()
        self.closed = False

    def offer(self, ticker: Ticker) -> None:
        """Queue ``ticker`` in place of any older one of its symbol (nothing if the reader already has these prices)."""
        symbol = ticker.symbol
        self._pending.pop(symbol, None)
        if ticker.same_prices(self._delivered.get(symbol)):
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


@dataclass
class _SymbolData:
    """What the streams have said about one symbol, and who watches it."""

    last_price: Decimal | None = None
    last_time_ms: int = 0
    day: DayTicker | None = None
    top: BookTop | None = None
    book: OrderBook | None = None
    published: Ticker | None = None
    watchers: set[TickerWatch] = field(default_factory=set)
    interest_ms: float = 0.0


class Quotes:
    """Tickers and books per symbol, from the streams when live and from shared REST snapshots otherwise."""

    def __init__(
        self,
        streams: MarketStreams,
        snapshots: MarketSnapshots,
        check_symbol: Callable[[str], object],
        *,
        rest_ttl_ms: int = 1000,
        idle_ms: int = 300_000,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.streams = streams
        self.check_symbol = check_symbol
        self.rest_ttl_ms = rest_ttl_ms
        self.idle_ms = idle_ms
        self.clock = clock
        self._symbols: dict[str, _SymbolData] = {}
        self._tickers: SharedFetch[Ticker] = SharedFetch(snapshots.ticker, rest_ttl_ms, clock)
        self._books: SharedFetch[OrderBook] = SharedFetch(
            lambda symbol, deadline: snapshots.order_book(symbol, REST_DEPTH, deadline), rest_ttl_ms, clock
        )
        self._watches: set[TickerWatch] = set()

    # ------------------------------------------------------------------ what callers ask for

    async def ticker(self, symbol: str, deadline: float | None = None) -> Ticker:
        """The symbol's latest ticker (NOT_FOUND for a symbol the exchange does not list)."""
        data = self._follow(symbol)
        return self._stream_ticker(symbol, data) or await self._rest_ticker(symbol, data, deadline)

    async def order_book(self, symbol: str, depth: int, deadline: float | None = None) -> OrderBook:
        """The top ``depth`` levels per side (0 means 10; at most 100)."""
        depth = depth or DEFAULT_DEPTH
        if not 1 <= depth <= MAX_DEPTH:
            raise InvalidArgument("depth", f"must be between 1 and {MAX_DEPTH} (0 means {DEFAULT_DEPTH})")
        data = self._follow(symbol)
        if depth <= STREAM_DEPTH and data.book is not None and self.streams.is_live(symbol):
            return data.book.top(depth)
        try:
            book = await self._books.get(symbol, deadline)
        except ExchangeError as exc:
            raise Unavailable(
                f"cannot get the order book of {symbol}: {exc.describe()}", reason="EXCHANGE_UNAVAILABLE"
            ) from None
        return book.top(depth)

    async def watch(self, symbols: Iterable[str]) -> AsyncIterator[Ticker]:
        """The current ticker of each symbol, then every change of prices or quantities, until closed."""
        wanted = list(dict.fromkeys(symbols))
        if not wanted:
            raise InvalidArgument("symbols", "name at least one symbol, for example BTCUSDT")
        if len(wanted) > MAX_WATCH_SYMBOLS:
            raise InvalidArgument("symbols", f"at most {MAX_WATCH_SYMBOLS} symbols per watch")
        for symbol in wanted:
            self._check(symbol, "symbols")
        watch = TickerWatch(wanted)
        self._watches.add(watch)
        followed = [(symbol, self._follow(symbol)) for symbol in wanted]
        for _, data in followed:
            data.watchers.add(watch)
        try:
            for symbol, data in followed:
                ticker = self._stream_ticker(symbol, data)
                if ticker is None:
                    try:
                        ticker = await self._rest_ticker(symbol, data, None)
                    except DomainError as exc:
                        # The streams or the poller deliver it as soon as they can.
                        log.info("no ticker yet for a new watcher", extra={"symbol": symbol, "error": exc.message})
                        continue
                watch.offer(ticker)
            while True:
                next_ticker = await watch.next()
                if next_ticker is None:
                    return
                yield next_ticker
        finally:
            self._watches.discard(watch)
            now = self.clock() * 1000
            for _, data in followed:
                data.watchers.discard(watch)
                data.interest_ms = now

    # ------------------------------------------------------------------ what the streams deliver

    def on_update(self, update: MarketUpdate) -> None:
        """Keep one stream update (older book updates than the one held are dropped) and tell the watchers."""
        data = self._symbols.get(update.symbol)
        if data is None:
            return  # a late message for a symbol no longer followed
        if isinstance(update, BookTop):
            if data.top is not None and update.update_id < data.top.update_id:
                return
            data.top = update
        elif isinstance(update, OrderBook):
            if data.book is not None and update.update_id < data.book.update_id:
                return
            data.book = update
        else:
            data.day = update
            data.last_price = update.last_price
            data.last_time_ms = update.time_ms
        self._publish(update.symbol, data)

    def on_live(self, symbols: Iterable[str], live: bool) -> None:
        """A symbol's streams became live (publish what is known) or stopped (forget it: it would go stale)."""
        for symbol in symbols:
            data = self._symbols.get(symbol)
            if data is None:
                continue
            if live:
                self._publish(symbol, data)
            else:
                data.top = data.book = data.day = None
                data.last_price = None

    # ------------------------------------------------------------------ background work

    async def run(self) -> None:
        """Feed watchers of symbols whose streams are not live from REST, and unsubscribe idle symbols."""
        while True:
            await asyncio.sleep(self.rest_ttl_ms / 1000)
            try:
                await self._poll()
                self._expire_idle()
            except Exception:  # keep serving; a bug here must not stop every watcher's updates
                log.exception("market data upkeep failed")

    async def _poll(self) -> None:
        symbols = [s for s, d in self._symbols.items() if d.watchers and not self.streams.is_live(s)]
        if not symbols:
            return
        results = await asyncio.gather(*(self._tickers.get(s, None) for s in symbols), return_exceptions=True)
        for symbol, result in zip(symbols, results, strict=True):
            data = self._symbols.get(symbol)
            if data is None or self.streams.is_live(symbol):
                continue
            if isinstance(result, Ticker):
                self._seed(data, result)
                self._send(data, result)
            elif isinstance(result, ExchangeError | DomainError):
                log.info("ticker snapshot failed", extra={"symbol": symbol, "error": str(result)})

    def _expire_idle(self) -> None:
        now = self.clock() * 1000
        for symbol, data in list(self._symbols.items()):
            if not data.watchers and now - data.interest_ms > self.idle_ms:
                del self._symbols[symbol]
                self._tickers.forget(symbol)
                self._books.forget(symbol)
                self.streams.unwant(symbol)

    def close(self) -> None:
        """End every watch (server shutdown)."""
        for watch in list(self._watches):
            watch.close()

    @property
    def followed(self) -> list[str]:
        """The symbols followed now."""
        return list(self._symbols)

    # ------------------------------------------------------------------ internals

    def _check(self, symbol: str, field_name: str) -> None:
        if not symbol:
            raise InvalidArgument(field_name, "is required, for example BTCUSDT")
        self.check_symbol(symbol)

    def _follow(self, symbol: str) -> _SymbolData:
        """The symbol's data, following it from now on if it was not followed."""
        self._check(symbol, "symbol")
        data = self._symbols.get(symbol)
        if data is None:
            data = self._symbols[symbol] = _SymbolData()
        data.interest_ms = self.clock() * 1000
        self.streams.want(symbol)
        return data

    async def _rest_ticker(self, symbol: str, data: _SymbolData, deadline: float | None) -> Ticker:
        try:
            ticker = await self._tickers.get(symbol, deadline)
        except ExchangeError as exc:
            raise Unavailable(
                f"cannot get the ticker of {symbol}: {exc.describe()}", reason="EXCHANGE_UNAVAILABLE"
            ) from None
        self._seed(data, ticker)
        return ticker

    @staticmethod
    def _seed(data: _SymbolData, ticker: Ticker) -> None:
        """Take the last price from a snapshot while the 24-hour ticker stream has not given one yet."""
        if data.last_price is None:
            data.last_price = ticker.last_price
            data.last_time_ms = ticker.time_ms

    def _stream_ticker(self, symbol: str, data: _SymbolData) -> Ticker | None:
        """The ticker from stream data, if the streams are live and have said enough."""
        if data.last_price is None or not self.streams.is_live(symbol):
            return None
        best = _best(data)
        if best is None:
            return None
        bid, bid_qty, ask, ask_qty, time_ms = best
        return Ticker(
            symbol=symbol,
            last_price=data.last_price,
            bid_price=bid,
            bid_quantity=bid_qty,
            ask_price=ask,
            ask_quantity=ask_qty,
            time_ms=max(data.last_time_ms, time_ms),
            source=Source.STREAM,
        )

    def _publish(self, symbol: str, data: _SymbolData) -> None:
        if data.watchers:
            ticker = self._stream_ticker(symbol, data)
            if ticker is not None:
                self._send(data, ticker)

    @staticmethod
    def _send(data: _SymbolData, ticker: Ticker) -> None:
        if ticker.same_prices(data.published):
            return
        data.published = ticker
        for watch in data.watchers:
            watch.offer(ticker)


def _best(data: _SymbolData) -> tuple[Decimal, Decimal, Decimal, Decimal, int] | None:
    """Best bid and ask (with quantities and time) from the newest of bookTicker and depth, else the 24h ticker."""
    candidates: list[tuple[int, int, tuple[Decimal, Decimal, Decimal, Decimal, int]]] = []
    if data.top is not None:
        top = data.top
        candidates.append(
            (top.update_id, 1, (top.bid_price, top.bid_quantity, top.ask_price, top.ask_quantity, top.time_ms))
        )
    if data.book is not None:
        book = data.book
        bid = (book.bids[0].price, book.bids[0].quantity) if book.bids else (ZERO, ZERO)
        ask = (book.asks[0].price, book.asks[0].quantity) if book.asks else (ZERO, ZERO)
        candidates.append((book.update_id, 0, (*bid, *ask, book.time_ms)))
    if candidates:
        return max(candidates, key=lambda c: (c[0], c[1]))[2]
    if data.day is not None:
        day = data.day
        return day.bid_price, day.bid_quantity, day.ask_price, day.ask_quantity, day.time_ms
    return None
