"""Public market data derived from the simulator's state: the synthetic book, its update id, 24-hour statistics.

The REST endpoints (``depth``, ``ticker/bookTicker``, ``ticker/24hr``) and the market data streams (``streams.py``)
both read them from here, so a client sees the same prices, quantities and update ids on either path.

- The book is the one takers meet (see ``matching.Exchange._walk``): ``levels`` levels per side, each
  ``level_quantity`` deep, asks from the last price upward and bids from it downward, ``spread()`` apart. Best bid
  and best ask are both the last price. A book with no quantity has no levels.
- The update id grows with every order and trade (the ids the exchange hands out) and with every change of the book
  itself (price, depth, quantity), so a client that drops updates older than the newest id it holds drops nothing new.
- The 24-hour statistics are kept in one-minute buckets of the prices observed (every tick of the stream publisher
  and every REST read) plus the account's trades (the simulator's only trades) of the last 24 hours.
"""

from __future__ import annotations

import collections
import weakref
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from services.exchange_simulator.matching import Market
from services.exchange_simulator.symbols import fmt8

ZERO = Decimal(0)
MINUTE_MS = 60_000
DAY_MS = 24 * 60 * MINUTE_MS
_PERCENT = Decimal("0.001")

Level = tuple[Decimal, Decimal]


def book(market: Market, limit: int) -> tuple[list[Level], list[Level]]:
    """(bids, asks), best first, at most ``limit`` levels per side."""
    quantity = market.level_quantity
    if quantity <= 0:
        return [], []
    levels = min(limit, market.levels)
    spread = market.spread()
    price = market.last_price
    asks = [(price + spread * i, quantity) for i in range(levels)]
    bids = [(price - spread * i, quantity) for i in range(levels) if price - spread * i > 0]
    return bids, asks


def wire_levels(levels: list[Level]) -> list[list[str]]:
    """Binance's form of book levels: ``[["price", "qty"], ...]``."""
    return [[fmt8(price), fmt8(qty)] for price, qty in levels]


@dataclass
class _BookState:
    signature: tuple[Decimal, Decimal, int]
    changes: int = 0


_BOOKS: weakref.WeakKeyDictionary[Market, _BookState] = weakref.WeakKeyDictionary()


def update_id(market: Market) -> int:
    """The book's update id as of now (never decreases for a market)."""
    signature = (market.last_price, market.level_quantity, market.levels)
    state = _BOOKS.get(market)
    if state is None:
        state = _BookState(signature)
        _BOOKS[market] = state
    elif state.signature != signature:
        state.signature = signature
        state.changes += 1
    return market.next_order_id + market.next_trade_id + state.changes


@dataclass(frozen=True)
class BookTop:
    """Best bid and ask with their quantities (zeros for an empty side, as Binance shows it)."""

    update_id: int
    bid: Decimal
    bid_qty: Decimal
    ask: Decimal
    ask_qty: Decimal


def book_top(market: Market) -> BookTop:
    bids, asks = book(market, 1)
    bid, bid_qty = bids[0] if bids else (ZERO, ZERO)
    ask, ask_qty = asks[0] if asks else (ZERO, ZERO)
    return BookTop(update_id(market), bid, bid_qty, ask, ask_qty)


def depth_payload(market: Market, limit: int) -> dict[str, Any]:
    """``GET /api/v3/depth`` and the partial depth streams: ``{lastUpdateId, bids, asks}``."""
    bids, asks = book(market, limit)
    return {"lastUpdateId": update_id(market), "bids": wire_levels(bids), "asks": wire_levels(asks)}


def book_ticker_rest(market: Market) -> dict[str, Any]:
    """``GET /api/v3/ticker/bookTicker`` for one symbol."""
    top = book_top(market)
    return {
        "symbol": market.spec.symbol,
        "bidPrice": fmt8(top.bid),
        "bidQty": fmt8(top.bid_qty),
        "askPrice": fmt8(top.ask),
        "askQty": fmt8(top.ask_qty),
    }


def book_ticker_event(market: Market, top: BookTop) -> dict[str, Any]:
    """The ``<symbol>@bookTicker`` stream payload (it has no event time on spot)."""
    return {
        "u": top.update_id,
        "s": market.spec.symbol,
        "b": fmt8(top.bid),
        "B": fmt8(top.bid_qty),
        "a": fmt8(top.ask),
        "A": fmt8(top.ask_qty),
    }


# ------------------------------------------------------------------------------------------ 24-hour statistics


@dataclass
class _Bucket:
    start: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


@dataclass
class _PriceHistory:
    buckets: collections.deque[_Bucket] = field(default_factory=collections.deque)


_HISTORY: weakref.WeakKeyDictionary[Market, _PriceHistory] = weakref.WeakKeyDictionary()


def observe(market: Market, now: int) -> None:
    """Record the market's current price in its one-minute bucket; forget buckets older than a day."""
    history = _HISTORY.get(market)
    if history is None:
        history = _PriceHistory()
        _HISTORY[market] = history
    price = market.last_price
    start = now - now % MINUTE_MS
    buckets = history.buckets
    if buckets and buckets[-1].start == start:
        bucket = buckets[-1]
        bucket.high = max(bucket.high, price)
        bucket.low = min(bucket.low, price)
        bucket.close = price
    elif not buckets or buckets[-1].start < start:
        buckets.append(_Bucket(start, price, price, price, price))
    while buckets and buckets[0].start < now - DAY_MS - MINUTE_MS:
        buckets.popleft()


@dataclass(frozen=True)
class DayStats:
    """24-hour rolling statistics of one symbol, as ``ticker/24hr`` and ``<symbol>@ticker`` show them."""

    symbol: str
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    last: Decimal
    prev_close: Decimal
    last_qty: Decimal
    volume: Decimal
    quote_volume: Decimal
    first_id: int
    last_id: int
    count: int
    top: BookTop

    @property
    def change(self) -> Decimal:
        return self.last - self.open

    @property
    def change_percent(self) -> Decimal:
        if self.open == 0:
            return ZERO
        return (self.change * 100 / self.open).quantize(_PERCENT, rounding=ROUND_HALF_UP)

    @property
    def weighted_average(self) -> Decimal:
        if self.volume == 0:
            return self.last
        return (self.quote_volume / self.volume).quantize(Decimal("0.00000001"), rounding=ROUND_HALF_UP)


def day_stats(market: Market, now: int) -> DayStats:
    """The statistics of the 24 hours up to ``now`` (observing the current price first)."""
    observe(market, now)
    since = now - DAY_MS
    buckets = [b for b in _HISTORY[market].buckets if b.start + MINUTE_MS > since]
    before = [b for b in _HISTORY[market].buckets if b.start + MINUTE_MS <= since]
    last = market.last_price
    open_price = buckets[0].open if buckets else last
    trades = [t for t in market.trades if t.time > since]
    return DayStats(
        symbol=market.spec.symbol,
        open_time=since,
        close_time=now,
        open=open_price,
        high=max([last, *(b.high for b in buckets)]),
        low=min([last, *(b.low for b in buckets)]),
        last=last,
        prev_close=before[-1].close if before else open_price,
        last_qty=trades[-1].qty if trades else ZERO,
        volume=sum((t.qty for t in trades), ZERO),
        quote_volume=sum((t.quote_qty for t in trades), ZERO),
        first_id=trades[0].id if trades else -1,
        last_id=trades[-1].id if trades else -1,
        count=len(trades),
        top=book_top(market),
    )


def _day_totals(stats: DayStats) -> dict[str, Any]:
    """The 24-hour window's volumes, times and trade ids, the same in the FULL and the MINI ticker."""
    return {
        "volume": fmt8(stats.volume),
        "quoteVolume": fmt8(stats.quote_volume),
        "openTime": stats.open_time,
        "closeTime": stats.close_time,
        "firstId": stats.first_id,
        "lastId": stats.last_id,
        "count": stats.count,
    }


def ticker_rest(stats: DayStats, *, mini: bool = False) -> dict[str, Any]:
    """``GET /api/v3/ticker/24hr`` for one symbol (``type=FULL``, or ``MINI``)."""
    if mini:
        return {
            "symbol": stats.symbol,
            "openPrice": fmt8(stats.open),
            "highPrice": fmt8(stats.high),
            "lowPrice": fmt8(stats.low),
            "lastPrice": fmt8(stats.last),
            **_day_totals(stats),
        }
    return {
        "symbol": stats.symbol,
        "priceChange": fmt8(stats.change),
        "priceChangePercent": f"{stats.change_percent:.3f}",
        "weightedAvgPrice": fmt8(stats.weighted_average),
        "prevClosePrice": fmt8(stats.prev_close),
        "lastPrice": fmt8(stats.last),
        "lastQty": fmt8(stats.last_qty),
        "bidPrice": fmt8(stats.top.bid),
        "bidQty": fmt8(stats.top.bid_qty),
        "askPrice": fmt8(stats.top.ask),
        "askQty": fmt8(stats.top.ask_qty),
        "openPrice": fmt8(stats.open),
        "highPrice": fmt8(stats.high),
        "lowPrice": fmt8(stats.low),
        **_day_totals(stats),
    }


def ticker_event(stats: DayStats) -> dict[str, Any]:
    """The ``<symbol>@ticker`` stream payload (event ``24hrTicker``)."""
    return {
        "e": "24hrTicker",
        "E": stats.close_time,
        "s": stats.symbol,
        "p": fmt8(stats.change),
        "P": f"{stats.change_percent:.3f}",
        "w": fmt8(stats.weighted_average),
        "x": fmt8(stats.prev_close),
        "c": fmt8(stats.last),
        "Q": fmt8(stats.last_qty),
        "b": fmt8(stats.top.bid),
        "B": fmt8(stats.top.bid_qty),
        "a": fmt8(stats.top.ask),
        "A": fmt8(stats.top.ask_qty),
        "o": fmt8(stats.open),
        "h": fmt8(stats.high),
        "l": fmt8(stats.low),
        "v": fmt8(stats.volume),
        "q": fmt8(stats.quote_volume),
        "O": stats.open_time,
        "C": stats.close_time,
        "F": stats.first_id,
        "L": stats.last_id,
        "n": stats.count,
    }
