"""gRPC servicer of trading.gateway.v1.ExchangeGateway: decode, call a use case, encode."""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.exchange_gateway.api import codec
from services.exchange_gateway.api.market_data import encode_book, encode_ticker
from services.exchange_gateway.domain.validation import parse_request
from services.exchange_gateway.service.app import GatewayApp
from services.exchange_gateway.service.quotes import Quotes
from shared.proto_time import ts_from_ms
from shared.server import Context
from trading.gateway.v1 import gateway_pb2, gateway_service_pb2_grpc, market_data_pb2
from trading.gateway.v1 import gateway_service_pb2 as pb


class ExchangeGatewayServicer(gateway_service_pb2_grpc.ExchangeGatewayServicer):
    """Thin adapter from the proto contract to the GatewayApp use cases (errors map in shared.server)."""

    def __init__(self, gateway: GatewayApp, quotes: Quotes):
        self.gateway = gateway
        self.quotes = quotes

    async def SubmitOrder(self, request: pb.SubmitOrderRequest, context: Context) -> pb.SubmitOrderResponse:
        order_request = parse_request(
            client_order_id=request.client_order_id,
            symbol=request.symbol,
            side=codec.SIDE_IN.get(request.side),
            type=codec.TYPE_IN.get(request.type),
            time_in_force=codec.TIF_IN.get(request.time_in_force),
            quantity=request.quantity,
            price=request.price,
            stop_price=request.stop_price,
        )
        order = await self.gateway.orders.submit(
            order_request, remaining_s=context.time_remaining(), fair_share_key=request.fair_share_key
        )
        return pb.SubmitOrderResponse(order=codec.encode_order(order))

    async def CancelOrder(self, request: pb.CancelOrderRequest, context: Context) -> pb.CancelOrderResponse:
        order = await self.gateway.orders.cancel(request.client_order_id, remaining_s=context.time_remaining())
        return pb.CancelOrderResponse(order=codec.encode_order(order))

    async def GetOrder(self, request: pb.GetOrderRequest, context: Context) -> pb.GetOrderResponse:
        order = await self.gateway.orders.get(
            request.client_order_id, refresh=request.refresh, remaining_s=context.time_remaining()
        )
        return pb.GetOrderResponse(order=codec.encode_order(order))

    async def GetSymbolRules(self, request: pb.GetSymbolRulesRequest, context: Context) -> pb.GetSymbolRulesResponse:
        return pb.GetSymbolRulesResponse(rules=codec.encode_rules(self.gateway.market.rules_for(request.symbol)))

    async def ListSymbolRules(self, request: pb.ListSymbolRulesRequest, context: Context) -> pb.ListSymbolRulesResponse:
        return pb.ListSymbolRulesResponse(rules=[codec.encode_rules(r) for r in self.gateway.market.all_rules()])

    async def GetLastPrice(self, request: pb.GetLastPriceRequest, context: Context) -> pb.GetLastPriceResponse:
        deadline = self.gateway.exchange.deadline_after(context.time_remaining())
        price = await self.gateway.market.last_price(request.symbol, deadline=deadline)
        return pb.GetLastPriceResponse(
            symbol=price.symbol, price=codec.encode_decimal(price.price), time=ts_from_ms(price.fetched_ms)
        )

    async def GetAccountBalances(
        self, request: pb.GetAccountBalancesRequest, context: Context
    ) -> pb.GetAccountBalancesResponse:
        deadline = self.gateway.exchange.deadline_after(context.time_remaining())
        balances = await self.gateway.market.balances(deadline=deadline)
        return pb.GetAccountBalancesResponse(balances=[codec.encode_balance(b) for b in balances])

    async def StreamExecutions(
        self, request: pb.StreamExecutionsRequest, context: Context
    ) -> AsyncIterator[pb.StreamExecutionsResponse]:
        async for execution in self.gateway.stream_executions(request.after_sequence):
            yield codec.encode_execution(execution)

    async def GetRateLimitStatus(
        self, request: pb.GetRateLimitStatusRequest, context: Context
    ) -> pb.GetRateLimitStatusResponse:
        status = self.gateway.rate_limit_status()
        response = pb.GetRateLimitStatusResponse(
            limits=[
                gateway_pb2.RateLimitUsage(
                    rate_limit_type=limit.rate_limit_type,
                    interval=limit.interval,
                    interval_num=limit.interval_num,
                    limit=limit.limit,
                    used=limit.used,
                    window_end_time=ts_from_ms(limit.window_end_ms),
                )
                for limit in status.limits
            ],
            queue_depth=status.queued_cancels + status.queued_orders + status.queued_queries,
            queued_cancels=status.queued_cancels,
            queued_orders=status.queued_orders,
            queued_queries=status.queued_queries,
            http_429_count=status.http_429,
            http_418_count=status.http_418,
            clock_offset_ms=status.clock_offset_ms,
        )
        backoff = ts_from_ms(status.backoff_until_ms)
        if backoff is not None:
            response.backoff_until_time.CopyFrom(backoff)
        return response

    async def ListForeignOrders(
        self, request: pb.ListForeignOrdersRequest, context: Context
    ) -> pb.ListForeignOrdersResponse:
        page = await self.gateway.foreign_orders(request.page_size, request.page_token, open_only=request.open_only)
        return pb.ListForeignOrdersResponse(
            orders=[codec.encode_foreign_order(o) for o in page.items], next_page_token=page.next_page_token
        )

    async def ListAnomalies(self, request: pb.ListAnomaliesRequest, context: Context) -> pb.ListAnomaliesResponse:
        page = await self.gateway.anomalies(request.page_size, request.page_token)
        return pb.ListAnomaliesResponse(
            anomalies=[codec.encode_anomaly(a) for a in page.items], next_page_token=page.next_page_token
        )

    async def GetTicker(
        self, request: market_data_pb2.GetTickerRequest, context: Context
    ) -> market_data_pb2.GetTickerResponse:
        deadline = self.gateway.exchange.deadline_after(context.time_remaining())
        ticker = await self.quotes.ticker(request.symbol, deadline)
        return market_data_pb2.GetTickerResponse(ticker=encode_ticker(ticker))

    async def GetOrderBook(
        self, request: market_data_pb2.GetOrderBookRequest, context: Context
    ) -> market_data_pb2.GetOrderBookResponse:
        deadline = self.gateway.exchange.deadline_after(context.time_remaining())
        book = await self.quotes.order_book(request.symbol, request.depth, deadline)
        return market_data_pb2.GetOrderBookResponse(book=encode_book(book))

    async def WatchTickers(
        self, request: market_data_pb2.WatchTickersRequest, context: Context
    ) -> AsyncIterator[market_data_pb2.WatchTickersResponse]:
        async for ticker in self.quotes.watch(request.symbols):
            yield market_data_pb2.WatchTickersResponse(ticker=encode_ticker(ticker))
