"""gRPC client of trading.gateway.v1.ExchangeGateway (service token), implementing ``GatewayPort``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import TypeVar

import grpc

from services.order_service.domain.model import (
    ExchangeOrder,
    ExchangeStatus,
    ExecutionReport,
    ExecutionType,
    Order,
    OrderType,
    Side,
    Submission,
    SymbolRules,
    TimeInForce,
)
from services.order_service.domain.reconciliation import ExchangeAnomaly, ForeignOrder
from shared.client import ServiceCaller
from shared.grpc_errors import from_rpc_error
from shared.money import ZERO, fmt
from shared.proto_time import ms_from_ts
from trading.gateway.v1 import gateway_pb2, gateway_service_pb2, gateway_service_pb2_grpc

SIDE_OUT = {Side.BUY: gateway_pb2.SIDE_BUY, Side.SELL: gateway_pb2.SIDE_SELL}
TYPE_OUT = {
    OrderType.MARKET: gateway_pb2.ORDER_TYPE_MARKET,
    OrderType.LIMIT: gateway_pb2.ORDER_TYPE_LIMIT,
    OrderType.STOP: gateway_pb2.ORDER_TYPE_STOP,
    OrderType.STOP_LIMIT: gateway_pb2.ORDER_TYPE_STOP_LIMIT,
    OrderType.TAKE_PROFIT: gateway_pb2.ORDER_TYPE_TAKE_PROFIT,
    OrderType.TAKE_PROFIT_LIMIT: gateway_pb2.ORDER_TYPE_TAKE_PROFIT_LIMIT,
    OrderType.LIMIT_MAKER: gateway_pb2.ORDER_TYPE_LIMIT_MAKER,
}
TYPE_IN = {v: k for k, v in TYPE_OUT.items()}
TIF_OUT = {
    TimeInForce.NONE: gateway_pb2.TIME_IN_FORCE_UNSPECIFIED,
    TimeInForce.GTC: gateway_pb2.TIME_IN_FORCE_GTC,
    TimeInForce.IOC: gateway_pb2.TIME_IN_FORCE_IOC,
    TimeInForce.FOK: gateway_pb2.TIME_IN_FORCE_FOK,
}
STATUS_IN = {
    gateway_pb2.EXCHANGE_ORDER_STATUS_UNKNOWN: ExchangeStatus.UNKNOWN,
    gateway_pb2.EXCHANGE_ORDER_STATUS_NEW: ExchangeStatus.NEW,
    gateway_pb2.EXCHANGE_ORDER_STATUS_PARTIALLY_FILLED: ExchangeStatus.PARTIALLY_FILLED,
    gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED: ExchangeStatus.FILLED,
    gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED: ExchangeStatus.CANCELED,
    gateway_pb2.EXCHANGE_ORDER_STATUS_REJECTED: ExchangeStatus.REJECTED,
    gateway_pb2.EXCHANGE_ORDER_STATUS_EXPIRED: ExchangeStatus.EXPIRED,
}
EXEC_IN = {
    gateway_pb2.EXECUTION_TYPE_NEW: ExecutionType.NEW,
    gateway_pb2.EXECUTION_TYPE_TRADE: ExecutionType.TRADE,
    gateway_pb2.EXECUTION_TYPE_CANCELED: ExecutionType.CANCELED,
    gateway_pb2.EXECUTION_TYPE_REJECTED: ExecutionType.REJECTED,
    gateway_pb2.EXECUTION_TYPE_EXPIRED: ExecutionType.EXPIRED,
}


def _dec(text: str) -> Decimal:
    return Decimal(text) if text else ZERO


def decode_exchange_order(order: gateway_pb2.ExchangeOrder) -> ExchangeOrder:
    """The gateway's ExchangeOrder as the domain sees it."""
    return ExchangeOrder(
        client_order_id=order.client_order_id,
        exchange_order_id=order.exchange_order_id,
        # An unset status is treated as "not known yet", never as an end.
        status=STATUS_IN.get(order.status, ExchangeStatus.UNKNOWN),
        executed_quantity=_dec(order.executed_quantity),
        cumulative_quote_quantity=_dec(order.cumulative_quote_quantity),
        reject_reason=order.reject_reason,
    )


def decode_execution(execution: gateway_pb2.Execution) -> ExecutionReport:
    """One journaled execution as the domain sees it."""
    kind = EXEC_IN.get(execution.execution_type)
    if kind is None:
        raise ValueError(f"execution {execution.sequence} has no execution type")
    return ExecutionReport(
        sequence=execution.sequence,
        client_order_id=execution.client_order_id,
        exchange_order_id=execution.exchange_order_id,
        symbol=execution.symbol,
        execution_type=kind,
        order_status=STATUS_IN.get(execution.order_status, ExchangeStatus.UNKNOWN),
        trade_id=execution.trade_id,
        last_quantity=_dec(execution.last_quantity),
        last_price=_dec(execution.last_price),
        last_quote_quantity=_dec(execution.last_quote_quantity),
        cumulative_quantity=_dec(execution.cumulative_quantity),
        cumulative_quote_quantity=_dec(execution.cumulative_quote_quantity),
        commission=_dec(execution.commission),
        commission_asset=execution.commission_asset,
        is_maker=execution.is_maker,
        reject_reason=execution.reject_reason,
        transaction_time_ms=ms_from_ts(execution.transaction_time) or 0,
    )


def decode_rules(rules: gateway_pb2.SymbolRules) -> SymbolRules:
    """A symbol's rules as the domain sees them."""
    return SymbolRules(
        symbol=rules.symbol,
        status=rules.status,
        base_asset=rules.base_asset,
        quote_asset=rules.quote_asset,
        trading=rules.trading,
        min_price=_dec(rules.min_price),
        max_price=_dec(rules.max_price),
        tick_size=_dec(rules.tick_size),
        min_quantity=_dec(rules.min_quantity),
        max_quantity=_dec(rules.max_quantity),
        step_size=_dec(rules.step_size),
        market_min_quantity=_dec(rules.market_min_quantity),
        market_max_quantity=_dec(rules.market_max_quantity),
        market_step_size=_dec(rules.market_step_size),
        min_notional=_dec(rules.min_notional),
        max_notional=_dec(rules.max_notional),
        apply_min_to_market=rules.apply_min_to_market,
        apply_max_to_market=rules.apply_max_to_market,
        # A type this service does not know is one it never sends.
        order_types=frozenset(TYPE_IN[t] for t in rules.allowed_types if t in TYPE_IN),
    )


def encode_submit_request(order: Order, submission: Submission) -> gateway_service_pb2.SubmitOrderRequest:
    """The SubmitOrder request of an order; the order id is the client order id."""
    return gateway_service_pb2.SubmitOrderRequest(
        client_order_id=order.order_id,
        symbol=order.symbol,
        side=SIDE_OUT[order.side],
        type=TYPE_OUT[submission.type],
        time_in_force=TIF_OUT[submission.time_in_force],
        quantity=fmt(order.quantity),
        price=fmt(submission.price),
        stop_price=fmt(submission.stop_price),
        # The gateway serves new orders round-robin per key: one user's burst cannot starve another's order.
        fair_share_key=order.user_id,
    )


class GrpcGateway:
    """The exchange gateway over one shared channel."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str):
        self.stub = gateway_service_pb2_grpc.ExchangeGatewayStub(channel)
        self.call = ServiceCaller(service_token, what="exchange gateway")

    async def submit_order(self, order: Order, submission: Submission, timeout: float) -> ExchangeOrder:
        response = await self.call(self.stub.SubmitOrder, encode_submit_request(order, submission), timeout=timeout)
        return decode_exchange_order(response.order)

    async def cancel_order(self, client_order_id: str, timeout: float) -> ExchangeOrder:
        request = gateway_service_pb2.CancelOrderRequest(client_order_id=client_order_id)
        response = await self.call(self.stub.CancelOrder, request, timeout=timeout)
        return decode_exchange_order(response.order)

    async def get_order(self, client_order_id: str, refresh: bool, timeout: float) -> ExchangeOrder:
        request = gateway_service_pb2.GetOrderRequest(client_order_id=client_order_id, refresh=refresh)
        response = await self.call(self.stub.GetOrder, request, timeout=timeout)
        return decode_exchange_order(response.order)

    async def get_symbol_rules(self, symbol: str, timeout: float) -> SymbolRules:
        request = gateway_service_pb2.GetSymbolRulesRequest(symbol=symbol)
        response = await self.call(self.stub.GetSymbolRules, request, timeout=timeout)
        return decode_rules(response.rules)

    async def list_symbol_rules(self, timeout: float) -> list[SymbolRules]:
        response = await self.call(
            self.stub.ListSymbolRules, gateway_service_pb2.ListSymbolRulesRequest(), timeout=timeout
        )
        return [decode_rules(rules) for rules in response.rules]

    async def get_last_price(self, symbol: str, timeout: float) -> Decimal:
        request = gateway_service_pb2.GetLastPriceRequest(symbol=symbol)
        response = await self.call(self.stub.GetLastPrice, request, timeout=timeout)
        return _dec(response.price)

    async def account_balances(self, timeout: float) -> dict[str, tuple[Decimal, Decimal]]:
        response = await self.call(
            self.stub.GetAccountBalances, gateway_service_pb2.GetAccountBalancesRequest(), timeout=timeout
        )
        return {b.asset: (_dec(b.free), _dec(b.locked)) for b in response.balances}

    async def foreign_orders(self, timeout: float) -> list[ForeignOrder]:
        """Every foreign order the gateway recorded: all its pages, within ``timeout`` in all."""

        async def page(token: str, left: float) -> tuple[Sequence[gateway_pb2.ForeignOrder], str]:
            request = gateway_service_pb2.ListForeignOrdersRequest(page_size=_PAGE, page_token=token)
            response = await self.call(self.stub.ListForeignOrders, request, timeout=left)
            return response.orders, response.next_page_token

        found = await _every_page(page, timeout)
        return [
            ForeignOrder(
                symbol=o.symbol,
                client_order_id=o.client_order_id,
                exchange_order_id=o.exchange_order_id,
                side=gateway_pb2.Side.Name(o.side).removeprefix("SIDE_"),
                type=o.type,
                price=_dec(o.price),
                quantity=_dec(o.quantity),
                executed_quantity=_dec(o.executed_quantity),
                status=gateway_pb2.ExchangeOrderStatus.Name(o.status).removeprefix("EXCHANGE_ORDER_STATUS_"),
                open=o.open,
                first_seen_ms=ms_from_ts(o.first_seen_time) or 0,
            )
            for o in found
        ]

    async def anomalies(self, timeout: float) -> list[ExchangeAnomaly]:
        """Every anomaly the gateway recorded: all its pages, within ``timeout`` in all."""

        async def page(token: str, left: float) -> tuple[Sequence[gateway_pb2.Anomaly], str]:
            request = gateway_service_pb2.ListAnomaliesRequest(page_size=_PAGE, page_token=token)
            response = await self.call(self.stub.ListAnomalies, request, timeout=left)
            return response.anomalies, response.next_page_token

        found = await _every_page(page, timeout)
        return [
            ExchangeAnomaly(
                kind=gateway_pb2.AnomalyKind.Name(a.kind).removeprefix("ANOMALY_KIND_"),
                symbol=a.symbol,
                client_order_id=a.client_order_id,
                trade_id=a.trade_id,
                detail=a.detail,
                first_seen_ms=ms_from_ts(a.first_seen_time) or 0,
            )
            for a in found
        ]

    async def stream_executions(self, after_sequence: int) -> AsyncIterator[ExecutionReport]:
        call = self.stub.StreamExecutions(
            gateway_service_pb2.StreamExecutionsRequest(after_sequence=after_sequence),
            metadata=self.call.metadata(),
        )
        try:
            async for response in call:
                yield decode_execution(response.execution)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, what="exchange gateway execution stream") from None
        finally:
            call.cancel()


_PAGE = 1000
"""The largest page the gateway's lists return."""

T = TypeVar("T")


async def _every_page(page: Callable[[str, float], Awaitable[tuple[Sequence[T], str]]], timeout: float) -> list[T]:
    """Every item of a paged list: ``page(token, seconds left)`` gives a page and the next token ("" at the end).

    All the pages together get ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    found: list[T] = []
    token = ""
    while True:
        items, token = await page(token, max(0.001, deadline - time.monotonic()))
        found.extend(items)
        if not token:
            return found
