"""The public market data endpoints the gateway reads when a symbol's streams are not live (no signature).

They go through the REST client's pipeline (rate limiter at query priority, documented weight, retries of what is
safe to repeat, 429/418 handling), so a fallback read is budgeted like every other request.
"""

from __future__ import annotations

from services.exchange_gateway.adapters.binance.rate_limiter import Cost
from services.exchange_gateway.adapters.binance.rest import BinanceRestClient
from services.exchange_gateway.adapters.binance.schemas import dec
from services.exchange_gateway.domain.market_data import BookLevel, OrderBook, Source, Ticker

TICKER_24HR_WEIGHT = 2
"""``GET /api/v3/ticker/24hr`` with one symbol."""


def depth_weight(limit: int) -> int:
    """``GET /api/v3/depth``: 5 up to 100 levels, 25 up to 500, 50 up to 1000, 250 beyond."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1000:
        return 50
    return 250


class MarketRest:
    """``ticker/24hr`` and ``depth`` for one symbol, as domain tickers and books."""

    def __init__(self, rest: BinanceRestClient):
        self.rest = rest
        self.requests = 0

    async def ticker(self, symbol: str, deadline: float | None = None) -> Ticker:
        """GET /api/v3/ticker/24hr for one symbol (weight 2): last price, best bid and ask."""
        self.requests += 1
        data = await self.rest._request(
            "GET",
            "/api/v3/ticker/24hr",
            [("symbol", symbol)],
            signed=False,
            cost=Cost(TICKER_24HR_WEIGHT),
            deadline=deadline,
        )
        return Ticker(
            symbol=str(data.get("symbol") or symbol),
            last_price=dec(data.get("lastPrice")),
            bid_price=dec(data.get("bidPrice")),
            bid_quantity=dec(data.get("bidQty")),
            ask_price=dec(data.get("askPrice")),
            ask_quantity=dec(data.get("askQty")),
            time_ms=int(data.get("closeTime") or self.rest.clock.now_ms()),
            source=Source.REST,
        )

    async def order_book(self, symbol: str, limit: int, deadline: float | None = None) -> OrderBook:
        """GET /api/v3/depth for one symbol (weight by ``limit``)."""
        self.requests += 1
        data = await self.rest._request(
            "GET",
            "/api/v3/depth",
            [("symbol", symbol), ("limit", str(limit))],
            signed=False,
            cost=Cost(depth_weight(limit)),
            deadline=deadline,
        )
        return OrderBook(
            symbol=symbol,
            bids=tuple(BookLevel(dec(price), dec(qty)) for price, qty, *_ in data.get("bids") or ()),
            asks=tuple(BookLevel(dec(price), dec(qty)) for price, qty, *_ in data.get("asks") or ()),
            update_id=int(data.get("lastUpdateId") or 0),
            time_ms=self.rest.clock.now_ms(),
            source=Source.REST,
        )
