"""Market data in the gateway's terms: tickers, book levels, order books and the updates the streams deliver."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

ZERO = Decimal(0)


class Source(StrEnum):
    """Where a piece of market data came from."""

    STREAM = "STREAM"
    REST = "REST"


@dataclass(frozen=True)
class BookLevel:
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True)
class Ticker:
    """A symbol's last price and best bid and ask; ``time_ms`` is when the newest part was produced."""

    symbol: str
    last_price: Decimal
    bid_price: Decimal
    bid_quantity: Decimal
    ask_price: Decimal
    ask_quantity: Decimal
    time_ms: int
    source: Source

    def same_prices(self, other: Ticker | None) -> bool:
        """Whether ``other`` shows the same prices and quantities (times and sources aside)."""
        return other is not None and (
            self.last_price,
            self.bid_price,
            self.bid_quantity,
            self.ask_price,
            self.ask_quantity,
        ) == (other.last_price, other.bid_price, other.bid_quantity, other.ask_price, other.ask_quantity)


@dataclass(frozen=True)
class OrderBook:
    """The top of a book: bids best (highest) first, asks best (lowest) first."""

    symbol: str
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    update_id: int
    time_ms: int
    source: Source

    def top(self, depth: int) -> OrderBook:
        """The same book cut to ``depth`` levels per side."""
        return OrderBook(self.symbol, self.bids[:depth], self.asks[:depth], self.update_id, self.time_ms, self.source)


@dataclass(frozen=True)
class BookTop:
    """A bookTicker update: the best bid and ask with their quantities."""

    symbol: str
    update_id: int
    bid_price: Decimal
    bid_quantity: Decimal
    ask_price: Decimal
    ask_quantity: Decimal
    time_ms: int


@dataclass(frozen=True)
class DayTicker:
    """A 24-hour ticker update: the last price (its best bid and ask may lag the book's own updates)."""

    symbol: str
    last_price: Decimal
    bid_price: Decimal
    bid_quantity: Decimal
    ask_price: Decimal
    ask_quantity: Decimal
    time_ms: int


MarketUpdate = BookTop | OrderBook | DayTicker
"""What a market data stream delivers for one symbol."""
