"""gRPC servicer of trading.order.v1.OrderService: authenticate, decode, call a use case, encode.

No business rules here. Errors are ``shared.errors`` exceptions, mapped to statuses by the
server interceptor with ``shared.grpc_errors``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from services.order_service.api.auth import Authenticator
from services.order_service.api.codec import (
    check_user_id,
    decode_limits,
    decode_place,
    decode_status,
    encode_fill,
    encode_order,
    encode_parked,
    encode_report,
)
from services.order_service.api.market_data import encode_book, encode_symbol, encode_ticker
from services.order_service.domain.model import Caller, Scope
from services.order_service.service.cancellation import CancelAllOrders, CancelOrder
from services.order_service.service.deadline import Deadline
from services.order_service.service.limits import FairShare, rate_text
from services.order_service.service.outbox import Outbox
from services.order_service.service.placement import PlaceOrder
from services.order_service.service.queries import Queries
from services.order_service.service.quotes import Quotes
from services.order_service.service.reconciliation import ClientMoneyReconciliation
from services.order_service.service.watch import OrderFeed
from shared.auth import bearer_token
from shared.errors import InvalidArgument, Unavailable
from shared.proto_time import ms_from_ts, ts_from_ms
from shared.server import Context
from trading.order.v1 import market_data_pb2, order_service_pb2, order_service_pb2_grpc


def _peer(context: Context) -> str:
    """The client's address as gRPC reports it ("ipv4:203.0.113.7:51234"), or ''."""
    try:
        return str(context.peer() or "")
    except Exception:  # pragma: no cover - the peer is best effort
        return ""


class OrderServiceServicer(order_service_pb2_grpc.OrderServiceServicer):
    """The public trading API over the use cases it is given."""

    def __init__(
        self,
        auth: Authenticator,
        *,
        place_order: PlaceOrder,
        cancel_order: CancelOrder,
        cancel_all_orders: CancelAllOrders,
        queries: Queries,
        feed: OrderFeed,
        fair_share: FairShare,
        outbox: Outbox,
        reconciliation: ClientMoneyReconciliation,
        quotes: Quotes | None,
    ):
        self.auth = auth
        self.place_order = place_order
        self.cancel_order = cancel_order
        self.cancel_all_orders = cancel_all_orders
        self.queries = queries
        self.feed = feed
        self.fair_share = fair_share
        self.outbox = outbox
        self.reconciliation = reconciliation
        # None in a service built without a source of tickers and books: its market data RPCs are UNAVAILABLE.
        self.quotes = quotes

    async def _caller(self, context: Context, rpc: str, scope: Scope = Scope.READ) -> Caller:
        """The user calling ``rpc`` with an API key that has ``scope`` (the client's address goes along)."""
        token = bearer_token(context.invocation_metadata())
        return await self.auth.authenticate(token, scope=scope, peer=_peer(context), rpc=rpc)

    def _admin(self, context: Context, rpc: str) -> None:
        self.auth.require_admin(bearer_token(context.invocation_metadata()), peer=_peer(context), rpc=rpc)

    async def ListParkedEffects(
        self, request: order_service_pb2.ListParkedEffectsRequest, context: Context
    ) -> order_service_pb2.ListParkedEffectsResponse:
        self._admin(context, "ListParkedEffects")
        parked = await self.outbox.parked()
        return order_service_pb2.ListParkedEffectsResponse(effects=[encode_parked(p) for p in parked])

    async def GetReconciliationReport(
        self, request: order_service_pb2.GetReconciliationReportRequest, context: Context
    ) -> order_service_pb2.GetReconciliationReportResponse:
        self._admin(context, "GetReconciliationReport")
        report = await self.reconciliation.report()
        return order_service_pb2.GetReconciliationReportResponse(report=encode_report(report))

    async def GetUserLimits(
        self, request: order_service_pb2.GetUserLimitsRequest, context: Context
    ) -> order_service_pb2.GetUserLimitsResponse:
        self._admin(context, "GetUserLimits")
        user_id = check_user_id(request.user_id)
        return order_service_pb2.GetUserLimitsResponse(limits=self._limits(user_id))

    async def SetUserLimits(
        self, request: order_service_pb2.SetUserLimitsRequest, context: Context
    ) -> order_service_pb2.SetUserLimitsResponse:
        self._admin(context, "SetUserLimits")
        user_id = check_user_id(request.user_id)
        await self.fair_share.set_limits(user_id, decode_limits(request.orders_per_second, request.max_open_orders))
        limits = self._limits(user_id)
        self.auth.admin_action(
            "SetUserLimits",
            {
                "user_id": user_id,
                "orders_per_second": limits.orders_per_second,
                "max_open_orders": str(limits.max_open_orders),
            },
            peer=_peer(context),
        )
        return order_service_pb2.SetUserLimitsResponse(limits=limits)

    def _limits(self, user_id: str) -> order_service_pb2.UserLimits:
        limits = self.fair_share.limits_of(user_id)
        return order_service_pb2.UserLimits(
            user_id=user_id,
            orders_per_second=rate_text(limits.orders_per_second),
            max_open_orders=limits.max_open_orders,
            is_default=self.fair_share.is_default(user_id),
        )

    async def RetryParkedEffect(
        self, request: order_service_pb2.RetryParkedEffectRequest, context: Context
    ) -> order_service_pb2.RetryParkedEffectResponse:
        self._admin(context, "RetryParkedEffect")
        if request.effect_id <= 0:
            raise InvalidArgument("effect_id", "is required: the effect_id from ListParkedEffects")
        parked = await self.outbox.retry(request.effect_id)
        self.auth.admin_action("RetryParkedEffect", {"effect_id": str(request.effect_id)}, peer=_peer(context))
        return order_service_pb2.RetryParkedEffectResponse(effect=encode_parked(parked))

    async def PlaceOrder(
        self, request: order_service_pb2.PlaceOrderRequest, context: Context
    ) -> order_service_pb2.PlaceOrderResponse:
        caller = await self._caller(context, "PlaceOrder", Scope.TRADE)
        order = await self.place_order(caller, decode_place(request), Deadline.after(context.time_remaining()))
        return order_service_pb2.PlaceOrderResponse(order=encode_order(order))

    async def CancelOrder(
        self, request: order_service_pb2.CancelOrderRequest, context: Context
    ) -> order_service_pb2.CancelOrderResponse:
        caller = await self._caller(context, "CancelOrder", Scope.TRADE)
        if not request.order_id:
            raise InvalidArgument("order_id", "is required")
        order = await self.cancel_order(caller, request.order_id, Deadline.after(context.time_remaining()))
        return order_service_pb2.CancelOrderResponse(order=encode_order(order))

    async def GetOrder(
        self, request: order_service_pb2.GetOrderRequest, context: Context
    ) -> order_service_pb2.GetOrderResponse:
        caller = await self._caller(context, "GetOrder")
        order = await self.queries.get_order(caller, request.order_id)
        return order_service_pb2.GetOrderResponse(order=encode_order(order))

    async def ListOrders(
        self, request: order_service_pb2.ListOrdersRequest, context: Context
    ) -> order_service_pb2.ListOrdersResponse:
        caller = await self._caller(context, "ListOrders")
        page = await self.queries.list_orders(
            caller,
            symbol=request.symbol,
            status=decode_status(request.status),
            active_only=request.active_only,
            size=request.page_size,
            token=request.page_token,
        )
        return order_service_pb2.ListOrdersResponse(
            orders=[encode_order(o) for o in page.orders], next_page_token=page.next_page_token
        )

    async def ListFills(
        self, request: order_service_pb2.ListFillsRequest, context: Context
    ) -> order_service_pb2.ListFillsResponse:
        caller = await self._caller(context, "ListFills")
        page = await self.queries.list_fills(caller, request.order_id, size=request.page_size, token=request.page_token)
        return order_service_pb2.ListFillsResponse(
            fills=[encode_fill(f) for f in page.fills], next_page_token=page.next_page_token
        )

    async def ListTrades(
        self, request: order_service_pb2.ListTradesRequest, context: Context
    ) -> order_service_pb2.ListTradesResponse:
        caller = await self._caller(context, "ListTrades")
        page = await self.queries.list_trades(
            caller,
            symbol=request.symbol,
            start_ms=ms_from_ts(request.start_time) if request.HasField("start_time") else None,
            end_ms=ms_from_ts(request.end_time) if request.HasField("end_time") else None,
            size=request.page_size,
            token=request.page_token,
        )
        return order_service_pb2.ListTradesResponse(
            trades=[encode_fill(f) for f in page.trades], next_page_token=page.next_page_token
        )

    async def CancelAllOrders(
        self, request: order_service_pb2.CancelAllOrdersRequest, context: Context
    ) -> order_service_pb2.CancelAllOrdersResponse:
        caller = await self._caller(context, "CancelAllOrders", Scope.TRADE)
        done = await self.cancel_all_orders(caller, request.symbol, Deadline.after(context.time_remaining()))
        return order_service_pb2.CancelAllOrdersResponse(
            cancelled=[encode_order(o) for o in done.cancelled],
            pending=[encode_order(o) for o in done.pending],
            failed=[order_service_pb2.CancelFailure(order_id=i, reason=r) for i, r in done.failed],
        )

    async def WatchOrders(
        self, request: order_service_pb2.WatchOrdersRequest, context: Context
    ) -> AsyncIterator[order_service_pb2.WatchOrdersResponse]:
        caller = await self._caller(context, "WatchOrders")
        after = request.after_sequence if request.HasField("after_sequence") else None
        subscription = self.feed.subscribe(caller.user_id, request.symbol)
        # Tell the client the stream is live (headers) before the first change arrives.
        await context.send_initial_metadata(())
        async for order, sequence in self.feed.follow(subscription, after):
            yield order_service_pb2.WatchOrdersResponse(
                order=encode_order(order), event_time=ts_from_ms(order.update_time_ms), sequence=sequence
            )

    def _quotes(self) -> Quotes:
        if self.quotes is None:
            raise Unavailable("market data is not available from this order service", reason="NO_MARKET_DATA")
        return self.quotes

    async def ListSymbols(
        self, request: market_data_pb2.ListSymbolsRequest, context: Context
    ) -> market_data_pb2.ListSymbolsResponse:
        await self._caller(context, "ListSymbols")
        page = await self._quotes().symbols(request.page_size, request.page_token)
        return market_data_pb2.ListSymbolsResponse(
            symbols=[encode_symbol(s) for s in page.symbols], next_page_token=page.next_page_token
        )

    async def GetTicker(
        self, request: market_data_pb2.GetTickerRequest, context: Context
    ) -> market_data_pb2.GetTickerResponse:
        await self._caller(context, "GetTicker")
        ticker = await self._quotes().ticker(request.symbol, Deadline.after(context.time_remaining()))
        return market_data_pb2.GetTickerResponse(ticker=encode_ticker(ticker))

    async def GetOrderBook(
        self, request: market_data_pb2.GetOrderBookRequest, context: Context
    ) -> market_data_pb2.GetOrderBookResponse:
        await self._caller(context, "GetOrderBook")
        book = await self._quotes().order_book(request.symbol, request.depth, Deadline.after(context.time_remaining()))
        return market_data_pb2.GetOrderBookResponse(book=encode_book(book))

    async def WatchTickers(
        self, request: market_data_pb2.WatchTickersRequest, context: Context
    ) -> AsyncIterator[market_data_pb2.WatchTickersResponse]:
        await self._caller(context, "WatchTickers")
        tickers = await self._quotes().watch(request.symbols)
        # Tell the client the stream is live (headers) before the first ticker arrives.
        await context.send_initial_metadata(())
        async for ticker in tickers:
            yield market_data_pb2.WatchTickersResponse(ticker=encode_ticker(ticker))
