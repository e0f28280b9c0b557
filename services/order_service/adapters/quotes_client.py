"""Client of the gateway's market data RPCs (GetTicker, GetOrderBook, WatchTickers), implementing ``QuoteSource``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import grpc

from services.order_service.domain.market_data import BookLevel, OrderBook, Ticker
from shared.client import ServiceCaller
from shared.grpc_errors import from_rpc_error
from shared.money import ZERO
from shared.proto_time import ms_from_ts
from trading.gateway.v1 import gateway_service_pb2_grpc, market_data_pb2


def _dec(text: str) -> Decimal:
    return Decimal(text) if text else ZERO


def decode_ticker(ticker: market_data_pb2.Ticker) -> Ticker:
    """The gateway's ticker as the domain sees it."""
    return Ticker(
        symbol=ticker.symbol,
        last_price=_dec(ticker.last_price),
        bid_price=_dec(ticker.bid_price),
        bid_quantity=_dec(ticker.bid_quantity),
        ask_price=_dec(ticker.ask_price),
        ask_quantity=_dec(ticker.ask_quantity),
        time_ms=ms_from_ts(ticker.update_time) or 0,
    )


def decode_book(book: market_data_pb2.OrderBook) -> OrderBook:
    """The gateway's order book as the domain sees it."""
    return OrderBook(
        symbol=book.symbol,
        bids=tuple(BookLevel(_dec(level.price), _dec(level.quantity)) for level in book.bids),
        asks=tuple(BookLevel(_dec(level.price), _dec(level.quantity)) for level in book.asks),
        time_ms=ms_from_ts(book.update_time) or 0,
    )


class GrpcQuotes:
    """Tickers and books from the exchange gateway over the order service's channel to it."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str):
        self.stub = gateway_service_pb2_grpc.ExchangeGatewayStub(channel)
        self.call = ServiceCaller(service_token, what="exchange gateway")

    async def get_ticker(self, symbol: str, timeout: float) -> Ticker:
        request = market_data_pb2.GetTickerRequest(symbol=symbol)
        response = await self.call(self.stub.GetTicker, request, timeout=timeout)
        return decode_ticker(response.ticker)

    async def get_order_book(self, symbol: str, depth: int, timeout: float) -> OrderBook:
        request = market_data_pb2.GetOrderBookRequest(symbol=symbol, depth=depth)
        response = await self.call(self.stub.GetOrderBook, request, timeout=timeout)
        return decode_book(response.book)

    async def watch_tickers(self, symbols: list[str]) -> AsyncIterator[Ticker]:
        call = self.stub.WatchTickers(
            market_data_pb2.WatchTickersRequest(symbols=symbols), metadata=self.call.metadata()
        )
        try:
            async for response in call:
                yield decode_ticker(response.ticker)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, what="exchange gateway ticker stream") from None
        finally:
            call.cancel()
