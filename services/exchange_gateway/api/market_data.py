"""Proto <-> domain conversions for the market data messages of trading.gateway.v1 (tickers, order books)."""

from __future__ import annotations

from services.exchange_gateway.api.convert import dec_out
from services.exchange_gateway.domain.market_data import OrderBook, Source, Ticker
from shared.proto_time import ts_from_ms
from trading.gateway.v1 import market_data_pb2

SOURCE_OUT = {
    Source.STREAM: market_data_pb2.MARKET_DATA_SOURCE_STREAM,
    Source.REST: market_data_pb2.MARKET_DATA_SOURCE_REST,
}


def ticker_out(ticker: Ticker) -> market_data_pb2.Ticker:
    return market_data_pb2.Ticker(
        symbol=ticker.symbol,
        last_price=dec_out(ticker.last_price),
        bid_price=dec_out(ticker.bid_price),
        bid_quantity=dec_out(ticker.bid_quantity),
        ask_price=dec_out(ticker.ask_price),
        ask_quantity=dec_out(ticker.ask_quantity),
        update_time=ts_from_ms(ticker.time_ms),
        source=SOURCE_OUT[ticker.source],
    )


def book_out(book: OrderBook) -> market_data_pb2.OrderBook:
    return market_data_pb2.OrderBook(
        symbol=book.symbol,
        bids=[market_data_pb2.BookLevel(price=dec_out(b.price), quantity=dec_out(b.quantity)) for b in book.bids],
        asks=[market_data_pb2.BookLevel(price=dec_out(a.price), quantity=dec_out(a.quantity)) for a in book.asks],
        update_id=book.update_id,
        update_time=ts_from_ms(book.time_ms),
        source=SOURCE_OUT[book.source],
    )
