"""Quotes over fake streams and snapshots: stream payloads, shared REST snapshots, conflated watchers, idle symbols."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from services.exchange_gateway.adapters.binance.market_stream import parse_update, stream_base, stream_names
from services.exchange_gateway.config import Config, default_stream_url
from services.exchange_gateway.domain.errors import ExchangeError, ExchangeOutcome, Failure
from services.exchange_gateway.domain.market_data import BookLevel, BookTop, DayTicker, OrderBook, Source, Ticker
from services.exchange_gateway.service.quotes import Quotes
from shared.errors import InvalidArgument, NotFound, Unavailable

D = Decimal
SYMBOLS = {"BTCUSDT", "ETHUSDT"}


class FakeStreams:
    def __init__(self) -> None:
        self.wanted: list[str] = []
        self.live: set[str] = set()

    def want(self, symbol: str) -> None:
        if symbol not in self.wanted:
            self.wanted.append(symbol)

    def unwant(self, symbol: str) -> None:
        self.wanted.remove(symbol)
        self.live.discard(symbol)

    def is_live(self, symbol: str) -> bool:
        return symbol in self.live


class FakeSnapshots:
    def __init__(self) -> None:
        self.ticker_calls = 0
        self.book_calls: list[int] = []
        self.price = D("50000")
        self.release = asyncio.Event()
        self.release.set()
        self.fail = False

    async def ticker(self, symbol: str, deadline: float | None = None) -> Ticker:
        self.ticker_calls += 1
        await self.release.wait()
        if self.fail:
            raise _down()
        return Ticker(symbol, self.price, self.price, D(1), self.price, D(1), 1000, Source.REST)

    async def order_book(self, symbol: str, limit: int, deadline: float | None = None) -> OrderBook:
        self.book_calls.append(limit)
        levels = tuple(BookLevel(self.price + i, D(1)) for i in range(limit))
        return OrderBook(symbol, levels, levels, 7, 1000, Source.REST)


def _down() -> ExchangeError:
    return ExchangeError("cannot connect", failure=Failure.UNREACHABLE, outcome=ExchangeOutcome.RETRYABLE)


def check_symbol(symbol: str) -> None:
    if symbol not in SYMBOLS:
        raise NotFound(f"symbol {symbol!r} is not listed")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(**kwargs: object) -> tuple[Quotes, FakeStreams, FakeSnapshots, Clock]:
    streams, snapshots, clock = FakeStreams(), FakeSnapshots(), Clock()
    quotes = Quotes(streams, snapshots, check_symbol, clock=clock, **kwargs)  # type: ignore[arg-type]
    return quotes, streams, snapshots, clock


def top(symbol: str, update_id: int, bid: str, ask: str | None = None) -> BookTop:
    return BookTop(symbol, update_id, D(bid), D(2), D(ask or bid), D(3), 5000)


def day(symbol: str, last: str) -> DayTicker:
    return DayTicker(symbol, D(last), D(last), D(1), D(last), D(1), 6000)


def test_stream_payloads_parse_as_binance_sends_them() -> None:
    book_top = parse_update(
        "btcusdt@bookTicker", {"u": 9, "s": "BTCUSDT", "b": "1.5", "B": "2", "a": "1.6", "A": "3"}, 42
    )
    assert book_top == BookTop("BTCUSDT", 9, D("1.5"), D(2), D("1.6"), D(3), 42)
    depth = parse_update("ethusdt@depth20@100ms", {"lastUpdateId": 5, "bids": [["10", "1"]], "asks": []}, 43)
    assert depth == OrderBook("ETHUSDT", (BookLevel(D(10), D(1)),), (), 5, 43, Source.STREAM)
    ticker = parse_update("btcusdt@ticker", {"e": "24hrTicker", "E": 77, "s": "BTCUSDT", "c": "3", "b": "2"}, 44)
    assert isinstance(ticker, DayTicker) and ticker.last_price == D(3) and ticker.time_ms == 77
    assert parse_update("btcusdt@trade", {"e": "trade"}, 45) is None
    assert stream_names("BTCUSDT") == ["btcusdt@bookTicker", "btcusdt@depth20@100ms", "btcusdt@ticker"]


def test_stream_urls_follow_the_environment() -> None:
    assert default_stream_url("sim", "http://127.0.0.1:8765") == "ws://127.0.0.1:8765"
    assert default_stream_url("testnet", "https://testnet.binance.vision") == "wss://stream.testnet.binance.vision"
    assert default_stream_url("live", "https://api.binance.com") == "wss://stream.binance.com:9443"
    assert stream_base("wss://stream.testnet.binance.vision/ws") == "wss://stream.testnet.binance.vision"
    env = {"TRADING_SERVICE_TOKEN": "s", "TRADING_ADMIN_TOKEN": "a", "BINANCE_BASE_URL": "http://127.0.0.1:9000"}
    assert Config.from_env(env).stream_url == "ws://127.0.0.1:9000"
    assert Config.from_env({**env, "BINANCE_STREAM_URL": "ws://elsewhere:1"}).stream_url == "ws://elsewhere:1"


async def test_a_hundred_callers_share_one_snapshot_per_interval() -> None:
    quotes, streams, snapshots, clock = make(rest_ttl_ms=1000)
    snapshots.release.clear()
    waiting = [asyncio.create_task(quotes.ticker("BTCUSDT")) for _ in range(100)]
    await asyncio.sleep(0)
    snapshots.release.set()
    results = await asyncio.gather(*waiting)
    assert snapshots.ticker_calls == 1 and {t.last_price for t in results} == {D(50000)}
    assert streams.wanted == ["BTCUSDT"]
    clock.now += 0.5
    await quotes.ticker("BTCUSDT")
    assert snapshots.ticker_calls == 1
    clock.now += 0.6
    await quotes.ticker("BTCUSDT")
    assert snapshots.ticker_calls == 2


async def test_live_stream_data_is_served_without_any_snapshot() -> None:
    quotes, streams, snapshots, _ = make()
    await quotes.ticker("BTCUSDT")
    streams.live.add("BTCUSDT")
    quotes.on_live(["BTCUSDT"], True)
    quotes.on_update(day("BTCUSDT", "50100"))
    quotes.on_update(top("BTCUSDT", 10, "50090", "50110"))
    calls = snapshots.ticker_calls
    ticker = await quotes.ticker("BTCUSDT")
    assert (ticker.last_price, ticker.bid_price, ticker.ask_price) == (D(50100), D(50090), D(50110))
    assert ticker.source is Source.STREAM and ticker.time_ms == 6000
    assert snapshots.ticker_calls == calls


async def test_the_newer_of_book_ticker_and_depth_gives_the_best_prices() -> None:
    quotes, streams, _, _ = make()
    await quotes.ticker("BTCUSDT")
    streams.live.add("BTCUSDT")
    quotes.on_update(day("BTCUSDT", "100"))
    quotes.on_update(top("BTCUSDT", 10, "99"))
    book = OrderBook("BTCUSDT", (BookLevel(D(98), D(1)),), (BookLevel(D(101), D(1)),), 11, 7000, Source.STREAM)
    quotes.on_update(book)
    assert (await quotes.ticker("BTCUSDT")).bid_price == D(98)
    quotes.on_update(top("BTCUSDT", 9, "50"))  # older than the book ticker held: dropped
    assert (await quotes.ticker("BTCUSDT")).bid_price == D(98)
    quotes.on_update(top("BTCUSDT", 12, "97"))
    assert (await quotes.ticker("BTCUSDT")).bid_price == D(97)
    assert (await quotes.order_book("BTCUSDT", 1)).bids == (BookLevel(D(98), D(1)),)


async def test_deep_books_and_books_without_a_live_stream_come_from_one_shared_snapshot() -> None:
    quotes, _, snapshots, _ = make()
    books = await asyncio.gather(*(quotes.order_book("ETHUSDT", depth) for depth in (1, 10, 100, 0)))
    assert [len(b.asks) for b in books] == [1, 10, 100, 10]
    assert snapshots.book_calls == [100]
    with pytest.raises(InvalidArgument) as bad:
        await quotes.order_book("ETHUSDT", 101)
    assert bad.value.metadata["field"] == "depth"


async def test_a_slow_watcher_gets_the_newest_prices_not_a_backlog() -> None:
    quotes, streams, _, _ = make()
    streams.live.add("BTCUSDT")
    watch = quotes.watch(["BTCUSDT"])
    first = await watch.__anext__()  # the current ticker: a snapshot, the stream has said nothing yet
    assert first.source is Source.REST and first.last_price == D(50000)
    quotes.on_update(day("BTCUSDT", "100"))
    for update_id, bid in enumerate(("101", "102", "103", "104"), start=1):
        quotes.on_update(top("BTCUSDT", update_id, bid))
    newest = await watch.__anext__()
    assert (newest.last_price, newest.bid_price, newest.source) == (D(100), D(104), Source.STREAM)
    quotes.on_update(top("BTCUSDT", 9, "104"))  # the same prices again: nothing new to tell
    quotes.close()
    with pytest.raises(StopAsyncIteration):
        await watch.__anext__()


async def test_watchers_of_a_symbol_without_live_streams_are_fed_by_polling() -> None:
    quotes, _, snapshots, clock = make(rest_ttl_ms=1000)
    watch = quotes.watch(["ETHUSDT"])
    assert (await watch.__anext__()).last_price == D(50000)
    snapshots.price = D(49000)
    clock.now += 2
    await quotes._poll()
    polled = await watch.__anext__()
    assert polled.last_price == D(49000) and polled.source is Source.REST
    await watch.aclose()


async def test_bad_watches_are_refused_before_anything_is_followed() -> None:
    quotes, streams, _, _ = make()
    with pytest.raises(InvalidArgument) as none:
        await quotes.watch([]).__anext__()
    assert none.value.metadata["field"] == "symbols"
    with pytest.raises(NotFound):
        await quotes.watch(["BTCUSDT", "NOPEUSDT"]).__anext__()
    with pytest.raises(InvalidArgument) as empty:
        await quotes.watch(["BTCUSDT", ""]).__anext__()
    assert empty.value.metadata["field"] == "symbols"
    assert streams.wanted == [] and quotes.followed == []


async def test_an_unreachable_exchange_is_unavailable_and_idle_symbols_are_unsubscribed() -> None:
    quotes, streams, snapshots, clock = make(idle_ms=60_000)
    snapshots.fail = True
    with pytest.raises(Unavailable):
        await quotes.ticker("BTCUSDT")
    assert streams.wanted == ["BTCUSDT"]
    clock.now += 30
    quotes._expire_idle()
    assert streams.wanted == ["BTCUSDT"]
    clock.now += 31
    quotes._expire_idle()
    assert streams.wanted == [] and quotes.followed == []
