"""The Exchange port on Binance: domain requests in, domain snapshots out."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from services.exchange_gateway.adapters.binance.enums import (
    EXEC_TYPE_EXT_TO_INT,
    ORDER_TYPE_INT_TO_EXT,
    SIDE_EXT_TO_INT,
    SIDE_INT_TO_EXT,
    TIF_INT_TO_EXT,
    order_status,
)
from services.exchange_gateway.adapters.binance.rate_limiter import Grant, LimitRule, Priority
from services.exchange_gateway.adapters.binance.rest import BinanceRestClient
from services.exchange_gateway.adapters.binance.schemas import BinanceOrder, ExecutionReport
from services.exchange_gateway.domain.model import (
    Balance,
    ExchangeEvent,
    ExecType,
    Fill,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    SymbolRules,
)
from services.exchange_gateway.domain.validation import plain
from services.exchange_gateway.service.ports import LimitStatus, RateStatus, RequestKind

_KIND = {
    RequestKind.NEW_ORDER: ("order.new", Priority.ORDER),
    RequestKind.CANCEL: ("order.cancel", Priority.CANCEL),
}


def order_params(request: OrderRequest) -> list[tuple[str, str]]:
    """POST /api/v3/order parameters for a domain request (type and time in force mapped)."""
    params = [
        ("symbol", request.symbol),
        ("side", SIDE_INT_TO_EXT[request.side]),
        ("type", ORDER_TYPE_INT_TO_EXT[request.type]),
    ]
    if request.time_in_force is not None:
        params.append(("timeInForce", TIF_INT_TO_EXT[request.time_in_force]))
    params.append(("quantity", plain(request.quantity)))
    if request.price is not None:
        params.append(("price", plain(request.price)))
    if request.stop_price is not None:
        params.append(("stopPrice", plain(request.stop_price)))
    params.append(("newClientOrderId", request.client_order_id))
    return params


def snapshot(order: BinanceOrder) -> OrderSnapshot:
    """Domain snapshot of a Binance order answer."""
    return OrderSnapshot(
        client_order_id=order.own_client_order_id,
        exchange_order_id=order.orderId,
        symbol=order.symbol,
        status=order_status(order.status) if order.status else OrderStatus.NEW,
        executed_qty=order.executedQty,
        cum_quote_qty=order.cummulativeQuoteQty,
        time_ms=order.time_ms,
        fills=tuple(f.to_fill(order.time_ms) for f in order.fills),
        reason=order.expiryReason,
        side=SIDE_EXT_TO_INT.get(order.side),
        order_type=order.type,
        price=order.price,
        quantity=order.origQty,
    )


def event_from_report(data: dict[str, Any]) -> ExchangeEvent | None:
    """Domain event of a user data stream event; None for events the journal does not record."""
    if data.get("e") != "executionReport":
        return None
    report = ExecutionReport.parse(data)
    exec_type = EXEC_TYPE_EXT_TO_INT.get(report.execution_type)
    if exec_type is None:
        return None  # REPLACED (amend) and future types change nothing we journal
    status = order_status(report.order_status)
    if report.execution_type == "TRADE_PREVENTION" and status is not OrderStatus.EXPIRED:
        return None  # prevented match that left the order working
    reason = ""
    if exec_type is ExecType.REJECTED:
        reason = report.reject_reason
    elif exec_type is ExecType.EXPIRED:
        reason = report.expiry_reason or report.execution_type
    return ExchangeEvent(
        client_order_id=report.own_client_order_id,
        exchange_order_id=report.order_id,
        symbol=report.symbol,
        exec_type=exec_type,
        order_status=status,
        cum_qty=report.cum_qty,
        time_ms=report.transaction_time,
        fill=report.to_fill() if exec_type is ExecType.TRADE else None,
        reason=reason,
        side=SIDE_EXT_TO_INT.get(report.side),
        order_type=report.order_type,
        price=report.price,
        quantity=report.quantity,
    )


class BinanceExchange:
    """Implements ``service.ports.Exchange`` with the REST client."""

    def __init__(self, rest: BinanceRestClient, *, deadline_margin_ms: float = 100.0):
        self.rest = rest
        self.clock = rest.clock
        self.limiter = rest.limiter
        self.recv_window_ms = rest.recv_window_ms
        self.deadline_margin_ms = deadline_margin_ms

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def deadline_after(self, seconds: float | None) -> float | None:
        if seconds is None:
            return None
        # Local time: a deadline must not move when the exchange clock offset is resynced. Leave
        # time for the round trip, so that what is sent can still be answered in time.
        # A very short deadline keeps half of itself for the answer rather than none at all.
        margin = min(self.deadline_margin_ms, max(0.0, seconds) * 500.0)
        return self.clock.local() + seconds * 1000.0 - margin

    async def admit(self, kind: RequestKind, deadline: float | None, *, fair_share_key: str = "") -> Grant:
        what, priority = _KIND[kind]
        return await self.rest.admit(what, priority, deadline, fair_share_key=fair_share_key)

    async def new_order(
        self,
        request: OrderRequest,
        *,
        timestamp_ms: int,
        ticket: Any,
        deadline: float | None,
        on_retimestamp: Callable[[int], Awaitable[None]],
        fair_share_key: str = "",
    ) -> OrderSnapshot:
        answer = await self.rest.new_order(
            order_params(request),
            timestamp_ms=timestamp_ms,
            grant=ticket,
            deadline=deadline,
            on_retimestamp=on_retimestamp,
            fair_share_key=fair_share_key,
        )
        return snapshot(answer)

    async def cancel_order(
        self, symbol: str, client_order_id: str, exchange_order_id: int, *, ticket: Any, deadline: float | None
    ) -> OrderSnapshot:
        answer = await self.rest.cancel_order(
            symbol, orig_client_order_id=client_order_id, order_id=exchange_order_id, grant=ticket, deadline=deadline
        )
        return snapshot(answer)

    async def query_order(self, symbol: str, client_order_id: str, *, deadline: float | None = None) -> OrderSnapshot:
        return snapshot(await self.rest.query_order(symbol, orig_client_order_id=client_order_id, deadline=deadline))

    async def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        return [snapshot(o) for o in await self.rest.open_orders(symbol)]

    async def order_trades(self, symbol: str, exchange_order_id: int) -> list[Fill]:
        trades = await self.rest.my_trades(symbol, exchange_order_id)
        return [t.to_fill() for t in trades if t.orderId == exchange_order_id]

    async def balances(self, deadline: float | None = None) -> list[Balance]:
        return await self.rest.account(deadline)

    async def last_price(self, symbol: str, deadline: float | None = None) -> Decimal:
        return await self.rest.ticker_price(symbol, deadline)

    async def load_exchange_info(self) -> list[SymbolRules]:
        info = await self.rest.exchange_info()
        rules = [LimitRule(r.rateLimitType, r.interval, r.intervalNum, r.limit) for r in info.rateLimits]
        if rules:
            self.limiter.configure(rules)
        return list(info.symbols)

    async def sync_time(self) -> None:
        await self.rest.sync_time()

    def rate_limit_status(self) -> RateStatus:
        status = self.limiter.status()
        return RateStatus(
            limits=[
                LimitStatus(
                    u.rule.rate_limit_type, u.rule.interval, u.rule.interval_num, u.rule.limit, u.used, u.window_end_ms
                )
                for u in status.limits
            ],
            queued_cancels=status.queued[Priority.CANCEL],
            queued_orders=status.queued[Priority.ORDER],
            queued_queries=status.queued[Priority.QUERY],
            backoff_until_ms=int(status.backoff_until_ms) if status.backoff_until_ms else None,
            http_429=status.http_429,
            http_418=status.http_418,
            clock_offset_ms=round(self.clock.offset_ms),
        )
