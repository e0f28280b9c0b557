"""Market data in users' terms: symbols with the rules an order must follow, tickers and order books.

A symbol's order types are those the gateway accepts for it, through the same test PlaceOrder applies
(``placement.allows``), so ListSymbols never offers a type that PlaceOrder refuses. A symbol is TRADING
exactly when PlaceOrder takes orders for it (the gateway's ``trading`` flag).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from .model import OrderType, SymbolRules
from .placement import allows


class SymbolStatus(StrEnum):
    TRADING = "TRADING"
    HALTED = "HALTED"


@dataclass(frozen=True)
class SymbolInfo:
    """A symbol as users see it; zero means "no limit"."""

    symbol: str
    base_asset: str
    quote_asset: str
    status: SymbolStatus
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal
    max_quantity: Decimal
    min_notional: Decimal
    max_notional: Decimal
    min_price: Decimal
    max_price: Decimal
    order_types: tuple[OrderType, ...]


def symbol_info(rules: SymbolRules) -> SymbolInfo:
    """The user's view of a symbol's exchange rules."""
    return SymbolInfo(
        symbol=rules.symbol,
        base_asset=rules.base_asset,
        quote_asset=rules.quote_asset,
        status=SymbolStatus.TRADING if rules.trading else SymbolStatus.HALTED,
        tick_size=rules.tick_size,
        step_size=rules.step_size,
        min_quantity=rules.min_quantity,
        max_quantity=rules.max_quantity,
        min_notional=rules.min_notional,
        max_notional=rules.max_notional,
        min_price=rules.min_price,
        max_price=rules.max_price,
        order_types=tuple(t for t in OrderType if allows(rules, t)),
    )


@dataclass(frozen=True)
class Ticker:
    """A symbol's last price and best bid and ask; ``time_ms`` is when the newest figure was current."""

    symbol: str
    last_price: Decimal
    bid_price: Decimal
    bid_quantity: Decimal
    ask_price: Decimal
    ask_quantity: Decimal
    time_ms: int


@dataclass(frozen=True)
class BookLevel:
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True)
class OrderBook:
    """The top of a book: bids best (highest) first, asks best (lowest) first."""

    symbol: str
    bids: tuple[BookLevel, ...]
    asks: tuple[BookLevel, ...]
    time_ms: int
