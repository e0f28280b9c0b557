"""Proto <-> domain for the market data messages of trading.order.v1 (symbols, tickers, order books)."""

from __future__ import annotations

from services.order_service.api.codec import TYPE_OUT
from services.order_service.domain.market_data import OrderBook, SymbolInfo, SymbolStatus, Ticker
from shared.money import fmt
from shared.proto_time import ts_from_ms
from trading.order.v1 import market_data_pb2

STATUS_OUT = {
    SymbolStatus.TRADING: market_data_pb2.SYMBOL_STATUS_TRADING,
    SymbolStatus.HALTED: market_data_pb2.SYMBOL_STATUS_HALTED,
}


def encode_symbol(info: SymbolInfo) -> market_data_pb2.Symbol:
    """A symbol and its rules as users see them."""
    return market_data_pb2.Symbol(
        symbol=info.symbol,
        base_asset=info.base_asset,
        quote_asset=info.quote_asset,
        status=STATUS_OUT[info.status],
        tick_size=fmt(info.tick_size),
        step_size=fmt(info.step_size),
        min_quantity=fmt(info.min_quantity),
        max_quantity=fmt(info.max_quantity),
        min_notional=fmt(info.min_notional),
        max_notional=fmt(info.max_notional),
        min_price=fmt(info.min_price),
        max_price=fmt(info.max_price),
        order_types=[TYPE_OUT[t] for t in info.order_types if t in TYPE_OUT],
    )


def encode_ticker(ticker: Ticker) -> market_data_pb2.Ticker:
    """A ticker; decimals with 8 places."""
    return market_data_pb2.Ticker(
        symbol=ticker.symbol,
        last_price=fmt(ticker.last_price),
        bid_price=fmt(ticker.bid_price),
        bid_quantity=fmt(ticker.bid_quantity),
        ask_price=fmt(ticker.ask_price),
        ask_quantity=fmt(ticker.ask_quantity),
        update_time=ts_from_ms(ticker.time_ms or None),
    )


def encode_book(book: OrderBook) -> market_data_pb2.OrderBook:
    """The top of a book."""
    return market_data_pb2.OrderBook(
        symbol=book.symbol,
        bids=[market_data_pb2.BookLevel(price=fmt(b.price), quantity=fmt(b.quantity)) for b in book.bids],
        asks=[market_data_pb2.BookLevel(price=fmt(a.price), quantity=fmt(a.quantity)) for a in book.asks],
        update_time=ts_from_ms(book.time_ms or None),
    )
