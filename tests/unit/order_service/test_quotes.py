"""The order service's market data over fakes: symbols in users' terms, paging, one gateway stream per symbol."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal

import pytest

from services.order_service.domain.market_data import BookLevel, OrderBook, SymbolStatus, Ticker, symbol_info
from services.order_service.domain.model import OrderType
from services.order_service.service.deadline import Deadline
from services.order_service.service.quotes import MAX_WATCH_SYMBOLS, Quotes
from shared.errors import InvalidArgument, NotFound, Unavailable
from tests.unit.order_service.fakes import BTCUSDT, FakeGateway

D = Decimal


def ticker(symbol: str, last: str, bid: str | None = None) -> Ticker:
    return Ticker(symbol, D(last), D(bid or last), D(1), D(last), D(1), 1_700_000_000_000)


class FakeSource:
    """The gateway's tickers and books; ``streams`` counts the WatchTickers streams it has open."""

    def __init__(self) -> None:
        self.tickers: dict[str, Ticker] = {"BTCUSDT": ticker("BTCUSDT", "50000"), "ETHUSDT": ticker("ETHUSDT", "3000")}
        self.queues: dict[str, list[asyncio.Queue[Ticker | Exception]]] = {}
        self.streams = 0
        self.opened = 0
        self.depths: list[int] = []

    async def get_ticker(self, symbol: str, timeout: float) -> Ticker:
        if symbol not in self.tickers:
            raise NotFound(f"exchange gateway: symbol {symbol!r} is not listed")
        return self.tickers[symbol]

    async def get_order_book(self, symbol: str, depth: int, timeout: float) -> OrderBook:
        self.depths.append(depth)
        level = BookLevel(D(1), D(1))
        return OrderBook(symbol, (level,) * depth, (level,) * depth, 1)

    async def watch_tickers(self, symbols: list[str]) -> AsyncIterator[Ticker]:
        queue: asyncio.Queue[Ticker | Exception] = asyncio.Queue()
        self.queues.setdefault(symbols[0], []).append(queue)
        self.streams += 1
        self.opened += 1
        try:
            for symbol in symbols:
                yield self.tickers[symbol]
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            self.streams -= 1
            self.queues[symbols[0]].remove(queue)

    def push(self, item: Ticker | Exception, symbol: str = "BTCUSDT") -> None:
        if isinstance(item, Ticker):
            self.tickers[item.symbol] = item
        for queue in self.queues.get(symbol, []):
            queue.put_nowait(item)


def make() -> tuple[Quotes, FakeGateway, FakeSource]:
    gateway, source = FakeGateway(), FakeSource()
    return Quotes(gateway, source, retry_max=0.05), gateway, source


async def settle(check, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def test_a_symbols_order_types_are_those_placement_accepts_in_the_public_names() -> None:
    info = symbol_info(BTCUSDT)
    assert info.order_types == (
        OrderType.MARKET,
        OrderType.LIMIT,
        OrderType.STOP,
        OrderType.STOP_LIMIT,
        OrderType.LIMIT_MAKER,
    )
    assert info.status is SymbolStatus.TRADING and info.tick_size == D("0.01") and info.min_notional == D(5)
    assert symbol_info(replace(BTCUSDT, status="BREAK", trading=False)).status is SymbolStatus.HALTED
    assert symbol_info(replace(BTCUSDT, order_types=frozenset())).order_types == tuple(OrderType)  # none listed: all


async def test_symbols_come_in_pages_sorted_by_symbol_and_a_page_token_is_checked() -> None:
    quotes, gateway, _ = make()
    gateway.rules["BNBUSDT"] = replace(BTCUSDT, symbol="BNBUSDT", base_asset="BNB")
    first = await quotes.symbols(2, "")
    assert [s.symbol for s in first.symbols] == ["BNBUSDT", "BTCUSDT"] and first.next_page_token
    last = await quotes.symbols(2, first.next_page_token)
    assert [s.symbol for s in last.symbols] == ["ETHUSDT"] and last.next_page_token == ""
    assert [s.symbol for s in (await quotes.symbols(0, "")).symbols] == ["BNBUSDT", "BTCUSDT", "ETHUSDT"]
    with pytest.raises(InvalidArgument) as bad:
        await quotes.symbols(2, "garbage")
    assert bad.value.metadata["field"] == "page_token"


async def test_tickers_and_books_are_checked_then_asked_of_the_gateway() -> None:
    quotes, _, source = make()
    assert (await quotes.ticker("BTCUSDT", Deadline())).last_price == D(50000)
    assert len((await quotes.order_book("ETHUSDT", 0, Deadline())).bids) == 10
    assert source.depths == [10]
    for symbol, field in (("", "symbol"), ("btc-usdt", "symbol")):
        with pytest.raises(InvalidArgument) as bad:
            await quotes.ticker(symbol, Deadline())
        assert bad.value.metadata["field"] == field
    with pytest.raises(InvalidArgument) as deep:
        await quotes.order_book("BTCUSDT", 101, Deadline())
    assert deep.value.metadata["field"] == "depth"
    with pytest.raises(NotFound) as unknown:
        await quotes.ticker("XRPUSDT", Deadline())
    assert unknown.value.reason == "UNKNOWN_SYMBOL" and "XRPUSDT" in unknown.value.message


async def test_watchers_of_a_symbol_share_one_gateway_stream_closed_with_the_last_of_them() -> None:
    quotes, _, source = make()
    alice = await quotes.watch(["BTCUSDT", "ETHUSDT"])
    assert {(await anext(alice)).symbol, (await anext(alice)).symbol} == {"BTCUSDT", "ETHUSDT"}
    bob = await quotes.watch(["BTCUSDT", "BTCUSDT"])
    assert (await anext(bob)).last_price == D(50000)  # the latest ticker at once, without a new stream
    assert source.streams == 2 and sorted(quotes.feeds) == ["BTCUSDT", "ETHUSDT"]

    source.push(ticker("BTCUSDT", "50100"))
    assert (await anext(alice)).last_price == D(50100)
    assert (await anext(bob)).last_price == D(50100)
    await alice.aclose()
    assert quotes.feeds == ["BTCUSDT"]
    await settle(lambda: source.streams == 1)
    await bob.aclose()
    assert quotes.feeds == []
    await settle(lambda: source.streams == 0)


async def test_a_slow_watcher_gets_the_newest_prices_and_a_failed_gateway_stream_is_opened_again() -> None:
    quotes, _, source = make()
    watch = await quotes.watch(["BTCUSDT"])
    await anext(watch)
    for last in ("50001", "50002", "50003"):
        source.push(ticker("BTCUSDT", last))
    await settle(lambda: quotes._feeds["BTCUSDT"].latest.last_price == D(50003))  # type: ignore[union-attr]
    assert (await anext(watch)).last_price == D(50003)

    source.push(Unavailable("exchange gateway ticker stream: connection reset"))
    await settle(lambda: source.opened == 2)
    source.push(ticker("BTCUSDT", "50004"))
    assert (await anext(watch)).last_price == D(50004)
    quotes.close()
    with pytest.raises(StopAsyncIteration):
        await anext(watch)


async def test_bad_watches_are_refused_before_any_stream_opens() -> None:
    quotes, _, source = make()
    cases = [
        ([], InvalidArgument),
        ([f"S{i}USDT" for i in range(MAX_WATCH_SYMBOLS + 1)], InvalidArgument),
        (["BTCUSDT", "btcusdt"], InvalidArgument),
        (["BTCUSDT", "XRPUSDT"], NotFound),
    ]
    for symbols, error in cases:
        with pytest.raises(error) as caught:
            await quotes.watch(symbols)
        if error is InvalidArgument:
            assert caught.value.metadata["field"] == "symbols"
    assert source.opened == 0 and quotes.feeds == []
