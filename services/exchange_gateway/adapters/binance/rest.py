"""Signed Binance spot REST client: one method per endpoint, every request through the rate limiter.

Retries live here and only here:
- -1021 (timestamp outside recvWindow) resyncs the clock and sends the same request once more with
  a fresh timestamp; the exchange refused it before the matching engine, so this cannot duplicate.
- "Not executed" failures (could not connect, -1008 with a 4xx) are sent again after a short pause,
  within the caller's deadline.
- Outcome-unknown failures (timeout, any 5xx, -1000, -1001, -1006, -1007) are retried only for requests that
  are safe to repeat (GET, DELETE). A new order is never sent twice: the caller resolves it by
  querying origClientOrderId.
- 429 and 418 pause the whole limiter (Retry-After, ban end) and are logged as security events;
  the request itself fails as "not executed".
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from services.exchange_gateway.adapters.binance.clock import ExchangeClock
from services.exchange_gateway.adapters.binance.errors import BinanceApiError, banned_until_ms, transport_error
from services.exchange_gateway.adapters.binance.rate_limiter import Cost, Grant, Priority, RateLimiter
from services.exchange_gateway.adapters.binance.schemas import (
    BinanceOrder,
    BinanceTrade,
    ExchangeInfo,
    dec,
    parse_balances,
)
from services.exchange_gateway.adapters.binance.signing import HmacSigner, Signer, append_signature, encode_params
from services.exchange_gateway.adapters.binance.transport import HttpTransport, TransportError
from services.exchange_gateway.domain.errors import ExchangeError, ExchangeOutcome, Failure
from services.exchange_gateway.domain.model import Balance
from shared.logs import register_secret, security_log

log = logging.getLogger("exchange_gateway.binance")

# Documented request weights (the Binance Spot API documentation, rest-api.md).
WEIGHT = {
    "time": 1,
    "exchangeInfo": 20,
    "order.new": 1,
    "order.cancel": 1,
    "order.query": 4,
    "openOrders.symbol": 6,
    "openOrders.all": 80,
    "myTrades.orderId": 5,
    "account": 20,
    "ticker.price": 2,
}

RETRY_PAUSES = (0.05, 0.2)


class BinanceRestClient:
    """The REST endpoints the gateway uses, signed, rate limited and classified."""

    def __init__(
        self,
        transport: HttpTransport,
        *,
        base_url: str,
        api_key: str,
        api_secret: str = "",
        signer: Signer | None = None,
        clock: ExchangeClock,
        limiter: RateLimiter,
        recv_window_ms: int = 5000,
        timeout_s: float = 10.0,
    ):
        register_secret(api_key)
        register_secret(api_secret)
        self.transport = transport
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        # The configured key's signer (HMAC, Ed25519 or RSA); without one, HMAC with ``api_secret``.
        self._signer = signer if signer is not None else HmacSigner(api_secret)
        self.clock = clock
        self.limiter = limiter
        self.recv_window_ms = recv_window_ms
        self.timeout_s = timeout_s
        self.stats: Counter[str] = Counter()
        # Told of every 429/418 (HTTP status, seconds paused, path): the audit trail's EXCHANGE_RATE_LIMITED.
        self.on_rate_limited: Callable[[int, float, str], None] | None = None
        self._resync_lock = asyncio.Lock()
        self._resync_generation = 0

    # --- time ---------------------------------------------------------------------------------------

    async def sync_time(self, samples: int = 3) -> float:
        """Measure the exchange clock offset with GET /api/v3/time (shortest round trip wins)."""
        best: tuple[float, float] | None = None
        for _ in range(max(1, samples)):
            sent = self.clock.local()
            data = await self._request("GET", "/api/v3/time", [], signed=False, cost=Cost(WEIGHT["time"]))
            received = self.clock.local()
            sample = self.clock.sample(sent, received, int(data["serverTime"]))
            if best is None or sample[1] < best[1]:
                best = sample
        assert best is not None
        self.clock.adopt(best[0])
        return best[0]

    async def _resync(self, generation: int) -> None:
        """Resync once for all requests that saw -1021 at the same time."""
        async with self._resync_lock:
            if self._resync_generation != generation:
                return
            await self.sync_time(samples=1)
            self._resync_generation += 1
            log.warning("clock resynced after -1021", extra={"offset_ms": round(self.clock.offset_ms, 1)})

    # --- the request pipeline -----------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]],
        *,
        signed: bool,
        cost: Cost,
        priority: Priority = Priority.QUERY,
        deadline: float | None = None,
        grant: Grant | None = None,
        timestamp_ms: int | None = None,
        on_retimestamp: Callable[[int], Awaitable[None]] | None = None,
        repeatable: bool = True,
        fair_share_key: str = "",
    ) -> Any:
        resynced = False
        pauses = list(RETRY_PAUSES)
        while True:
            if grant is None:
                grant = await self.limiter.acquire(priority, cost, deadline, fair_share_key=fair_share_key)
            used_grant, grant = grant, None
            query_params = list(params)
            if signed:
                generation = self._resync_generation
                ts = timestamp_ms if timestamp_ms is not None else self.clock.now_ms()
                timestamp_ms = None
                query_params += [("recvWindow", str(self.recv_window_ms)), ("timestamp", str(ts))]
            query = encode_params(query_params)
            if signed:
                query = append_signature(self._signer, query)
            url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
            headers = {"X-MBX-APIKEY": self._api_key} if signed else {}
            try:
                response = await self.transport.request(method, url, headers=headers, timeout=self.timeout_s)
            except TransportError as exc:
                error: ExchangeError = transport_error(str(exc), sent=exc.sent)
                self.stats["transport_error"] += 1
            else:
                self.limiter.observe(response.headers, used_grant)
                if 200 <= response.status < 300:
                    try:
                        return json.loads(response.body)
                    except ValueError:
                        error = BinanceApiError(response.status, None, "unreadable answer")
                else:
                    error = self._error(response.status, response.headers, response.body, path)
            if error.failure is Failure.INVALID_TIMESTAMP and signed and not resynced:
                self.stats["-1021"] += 1
                resynced = True
                await self._resync(generation)
                if on_retimestamp is not None:
                    timestamp_ms = self.clock.now_ms()
                    await on_retimestamp(timestamp_ms)
                continue
            retry = pauses and (
                (error.outcome is ExchangeOutcome.RETRYABLE and error.failure in (Failure.UNREACHABLE, Failure.BUSY))
                or (error.outcome is ExchangeOutcome.UNKNOWN and repeatable)
            )
            if retry and (deadline is None or self.clock.local() + pauses[0] * 1000 < deadline):
                await asyncio.sleep(pauses.pop(0))
                if on_retimestamp is not None and signed:
                    timestamp_ms = self.clock.now_ms()
                    await on_retimestamp(timestamp_ms)
                continue
            raise error

    def _error(self, status: int, headers: Any, body: bytes, path: str) -> BinanceApiError:
        code: int | None = None
        message = ""
        try:
            data = json.loads(body)
            if isinstance(data, dict):
                code = int(data["code"]) if "code" in data else None
                message = str(data.get("msg", ""))
        except (ValueError, TypeError):
            message = body[:200].decode("utf-8", "replace")
        retry_after: float | None = None
        if status in (429, 418):
            try:
                retry_after = float(headers.get("retry-after", ""))
            except ValueError:
                retry_after = None
            until = banned_until_ms(message)
            if until is not None:
                retry_after = max(retry_after or 0.0, (until - self.clock.now()) / 1000.0)
            if retry_after is None:
                retry_after = 60.0 if status == 429 else 120.0
            resume = self.limiter.pause(retry_after, status=status)
            self.stats[f"http_{status}"] += 1
            security_log.warning(
                "binance rate limit answer: all sending paused",
                extra={
                    "http_status": status,
                    "code": code,
                    "retry_after_s": retry_after,
                    "path": path,
                    "resume_ms": int(resume),
                },
            )
            if self.on_rate_limited is not None:
                self.on_rate_limited(status, retry_after, path)
        elif status == 403:
            security_log.warning("binance WAF refused a request (HTTP 403)", extra={"path": path})
        elif code in (-2014, -2015, -1022):
            security_log.warning("binance refused the API key or signature", extra={"code": code, "path": path})
        if status >= 500:
            self.stats["http_5xx"] += 1
        return BinanceApiError(status, code, message, retry_after=retry_after)

    # --- endpoints ----------------------------------------------------------------------------------

    async def server_time(self) -> int:
        """GET /api/v3/time (weight 1)."""
        data = await self._request("GET", "/api/v3/time", [], signed=False, cost=Cost(WEIGHT["time"]))
        return int(data["serverTime"])

    async def exchange_info(self) -> ExchangeInfo:
        """GET /api/v3/exchangeInfo (weight 20)."""
        data = await self._request("GET", "/api/v3/exchangeInfo", [], signed=False, cost=Cost(WEIGHT["exchangeInfo"]))
        return ExchangeInfo.parse(data)

    async def admit(self, what: str, priority: Priority, deadline: float | None, *, fair_share_key: str = "") -> Grant:
        """Wait for rate-limit capacity for one ``what`` request (see WEIGHT) before sending it."""
        return await self.limiter.acquire(priority, self.cost(what), deadline, fair_share_key=fair_share_key)

    @staticmethod
    def cost(what: str) -> Cost:
        return Cost(WEIGHT[what], orders=1 if what == "order.new" else 0)

    async def new_order(
        self,
        params: list[tuple[str, str]],
        *,
        timestamp_ms: int,
        grant: Grant | None,
        deadline: float | None,
        on_retimestamp: Callable[[int], Awaitable[None]] | None = None,
        fair_share_key: str = "",
    ) -> BinanceOrder:
        """POST /api/v3/order (weight 1, one ORDER); never repeated after an unknown outcome."""
        data = await self._request(
            "POST",
            "/api/v3/order",
            [*params, ("newOrderRespType", "FULL")],
            signed=True,
            cost=self.cost("order.new"),
            priority=Priority.ORDER,
            deadline=deadline,
            grant=grant,
            timestamp_ms=timestamp_ms,
            on_retimestamp=on_retimestamp,
            repeatable=False,
            fair_share_key=fair_share_key,
        )
        return BinanceOrder.parse(data)

    async def cancel_order(
        self,
        symbol: str,
        *,
        orig_client_order_id: str,
        order_id: int = 0,
        grant: Grant | None = None,
        deadline: float | None = None,
    ) -> BinanceOrder:
        """DELETE /api/v3/order (weight 1), by orderId when known (faster), else origClientOrderId."""
        params = [("symbol", symbol)]
        params.append(("orderId", str(order_id)) if order_id else ("origClientOrderId", orig_client_order_id))
        data = await self._request(
            "DELETE",
            "/api/v3/order",
            params,
            signed=True,
            cost=self.cost("order.cancel"),
            priority=Priority.CANCEL,
            deadline=deadline,
            grant=grant,
        )
        return BinanceOrder.parse(data)

    async def query_order(
        self,
        symbol: str,
        *,
        orig_client_order_id: str,
        deadline: float | None = None,
        priority: Priority = Priority.QUERY,
    ) -> BinanceOrder:
        """GET /api/v3/order by origClientOrderId (weight 4)."""
        data = await self._request(
            "GET",
            "/api/v3/order",
            [("symbol", symbol), ("origClientOrderId", orig_client_order_id)],
            signed=True,
            cost=self.cost("order.query"),
            priority=priority,
            deadline=deadline,
        )
        return BinanceOrder.parse(data)

    async def open_orders(self, symbol: str | None = None) -> list[BinanceOrder]:
        """GET /api/v3/openOrders (weight 6 with a symbol, 80 without)."""
        params = [("symbol", symbol)] if symbol else []
        what = "openOrders.symbol" if symbol else "openOrders.all"
        data = await self._request("GET", "/api/v3/openOrders", params, signed=True, cost=self.cost(what))
        return [BinanceOrder.parse(o) for o in data]

    async def my_trades(self, symbol: str, order_id: int) -> list[BinanceTrade]:
        """GET /api/v3/myTrades for one order (weight 5 with orderId)."""
        data = await self._request(
            "GET",
            "/api/v3/myTrades",
            [("symbol", symbol), ("orderId", str(order_id))],
            signed=True,
            cost=self.cost("myTrades.orderId"),
        )
        return [BinanceTrade.parse(t) for t in data]

    async def account(self, deadline: float | None = None) -> list[Balance]:
        """GET /api/v3/account (weight 20)."""
        data = await self._request(
            "GET", "/api/v3/account", [], signed=True, cost=self.cost("account"), deadline=deadline
        )
        return parse_balances(data)

    async def ticker_price(self, symbol: str, deadline: float | None = None) -> Decimal:
        """GET /api/v3/ticker/price for one symbol (weight 2)."""
        data = await self._request(
            "GET",
            "/api/v3/ticker/price",
            [("symbol", symbol)],
            signed=False,
            cost=self.cost("ticker.price"),
            deadline=deadline,
        )
        return dec(data["price"])
