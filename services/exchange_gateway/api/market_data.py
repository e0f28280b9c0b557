"""Proto <-> domain conversions for the market data messages of trading.gateway.v1 (tickers, order books)."""

from __future__ import annotations

from services.exchange_gateway.api.codec import encode_decimal
from services.exchange_gateway.domain.market_data import OrderBook, Source, Ticker
from shared.proto_time import ts_from_ms
from trading.gateway.v1 import market_data_pb2

SOURCE_OUT = {
    Source.STREAM: market_data_pb2.MARKET_DATA_SOURCE_STREAM,
    Source.REST: market_data_pb2.MARKET_DATA_SOURCE_REST,
}


def encode_ticker(ticker: Ticker) -> market_data_pb2.Ticker:
    return market_data_pb2.Ticker(
        symbol=ticker.symbol,
        last_price=encode_decimal(ticker.last_price),
        bid_price=encode_decimal(ticker.bid_price),
        bid_quantity=encode_decimal(ticker.bid_quantity),
        ask_price=encode_decimal(ticker.ask_price),
        ask_quantity=encode_decimal(ticker.ask_quantity),
        update_time=ts_from_ms(ticker.time_ms),
        source=SOURCE_OUT[ticker.source],
    )


def encode_book(book: OrderBook) -> market_data_pb2.OrderBook:
    return market_data_pb2.OrderBook(
        symbol=book.symbol,
        bids=[
            market_data_pb2.BookLevel(price=encode_decimal(b.price), quantity=encode_decimal(b.quantity))
            for b in book.bids
        ],
        asks=[
            market_data_pb2.BookLevel(price=encode_decimal(a.price), quantity=encode_decimal(a.quantity))
            for a in book.asks
        ],
        update_id=book.update_id,
        update_time=ts_from_ms(book.time_ms),
        source=SOURCE_OUT[book.source],
    )
