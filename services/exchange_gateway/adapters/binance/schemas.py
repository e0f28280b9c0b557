"""Wire schemas of the Binance answers the gateway reads, with Binance's own field names.

Decimals arrive as strings and are parsed with ``Decimal`` (never float). Fields the gateway does
not use are ignored; optional fields get neutral defaults. ``to_*`` functions turn a schema into
the domain's terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.exchange_gateway.adapters.binance.enums import ORDER_TYPE_EXT_TO_INT
from services.exchange_gateway.domain.model import Balance, Fill, SymbolRules

ZERO = Decimal(0)


def dec(value: Any) -> Decimal:
    """A Binance decimal string (or number) as Decimal; missing gives 0."""
    if value is None or value == "":
        return ZERO
    return Decimal(str(value))


@dataclass(frozen=True)
class OrderFill:
    """One element of ``fills`` in a FULL order response."""

    price: Decimal
    qty: Decimal
    commission: Decimal
    commissionAsset: str  # Binance's name
    tradeId: int

    @classmethod
    def parse(cls, data: dict[str, Any]) -> OrderFill:
        return cls(
            price=dec(data.get("price")),
            qty=dec(data.get("qty")),
            commission=dec(data.get("commission")),
            commissionAsset=str(data.get("commissionAsset") or ""),
            tradeId=int(data.get("tradeId", 0)),
        )

    def to_fill(self, time_ms: int) -> Fill:
        return Fill(
            trade_id=self.tradeId,
            quantity=self.qty,
            price=self.price,
            quote_quantity=self.price * self.qty,
            commission=self.commission,
            commission_asset=self.commissionAsset,
            is_maker=False,  # fills in the order response happened on arrival: taker
            time_ms=time_ms,
        )


@dataclass(frozen=True)
class BinanceOrder:
    """An order as POST/GET/DELETE /api/v3/order and GET /api/v3/openOrders return it."""

    symbol: str
    orderId: int
    clientOrderId: str
    origClientOrderId: str  # cancel responses: the order's own client id
    status: str
    price: Decimal
    origQty: Decimal
    executedQty: Decimal
    cummulativeQuoteQty: Decimal  # sic, Binance's spelling
    type: str
    side: str
    time_ms: int  # transactTime / updateTime / time, whichever is present
    fills: tuple[OrderFill, ...]
    expiryReason: str

    @classmethod
    def parse(cls, data: dict[str, Any]) -> BinanceOrder:
        time_ms = data.get("transactTime") or data.get("updateTime") or data.get("workingTime") or data.get("time") or 0
        return cls(
            symbol=str(data.get("symbol", "")),
            orderId=int(data.get("orderId", 0)),
            clientOrderId=str(data.get("clientOrderId", "")),
            origClientOrderId=str(data.get("origClientOrderId", "")),
            status=str(data.get("status", "")),
            price=dec(data.get("price")),
            origQty=dec(data.get("origQty")),
            executedQty=dec(data.get("executedQty")),
            cummulativeQuoteQty=dec(data.get("cummulativeQuoteQty")),
            type=str(data.get("type", "")),
            side=str(data.get("side", "")),
            time_ms=int(time_ms),
            fills=tuple(OrderFill.parse(f) for f in data.get("fills") or ()),
            expiryReason=str(data.get("expiryReason") or ""),
        )

    @property
    def own_client_order_id(self) -> str:
        """The order's client id (a cancel answer puts it in origClientOrderId)."""
        return self.origClientOrderId or self.clientOrderId


@dataclass(frozen=True)
class BinanceTrade:
    """One element of GET /api/v3/myTrades."""

    symbol: str
    id: int
    orderId: int
    price: Decimal
    qty: Decimal
    quoteQty: Decimal
    commission: Decimal
    commissionAsset: str
    time: int
    isMaker: bool

    @classmethod
    def parse(cls, data: dict[str, Any]) -> BinanceTrade:
        price, qty = dec(data.get("price")), dec(data.get("qty"))
        quote = data.get("quoteQty")
        return cls(
            symbol=str(data.get("symbol", "")),
            id=int(data.get("id", 0)),
            orderId=int(data.get("orderId", 0)),
            price=price,
            qty=qty,
            quoteQty=dec(quote) if quote not in (None, "") else price * qty,
            commission=dec(data.get("commission")),
            commissionAsset=str(data.get("commissionAsset") or ""),
            time=int(data.get("time", 0)),
            isMaker=bool(data.get("isMaker", False)),
        )

    def to_fill(self) -> Fill:
        return Fill(
            trade_id=self.id,
            quantity=self.qty,
            price=self.price,
            quote_quantity=self.quoteQty,
            commission=self.commission,
            commission_asset=self.commissionAsset,
            is_maker=self.isMaker,
            time_ms=self.time,
        )


@dataclass(frozen=True)
class ExecutionReport:
    """A user data stream ``executionReport`` event (single-letter Binance keys in the comments)."""

    symbol: str  # s
    client_order_id: str  # c
    orig_client_order_id: str  # C: the canceled order's id on a cancel
    side: str  # S
    order_type: str  # o
    quantity: Decimal  # q
    price: Decimal  # p
    execution_type: str  # x
    order_status: str  # X
    reject_reason: str  # r
    order_id: int  # i
    last_qty: Decimal  # l
    cum_qty: Decimal  # z
    last_price: Decimal  # L
    commission: Decimal  # n
    commission_asset: str  # N
    transaction_time: int  # T
    trade_id: int  # t
    is_maker: bool  # m
    cum_quote_qty: Decimal  # Z
    last_quote_qty: Decimal  # Y
    expiry_reason: str  # eR

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ExecutionReport:
        last_qty, last_price = dec(data.get("l")), dec(data.get("L"))
        last_quote = data.get("Y")
        return cls(
            symbol=str(data.get("s", "")),
            client_order_id=str(data.get("c") or ""),
            orig_client_order_id=str(data.get("C") or ""),
            side=str(data.get("S", "")),
            order_type=str(data.get("o", "")),
            quantity=dec(data.get("q")),
            price=dec(data.get("p")),
            execution_type=str(data.get("x", "")),
            order_status=str(data.get("X", "")),
            reject_reason=str(data.get("r") or "NONE"),
            order_id=int(data.get("i", 0)),
            last_qty=last_qty,
            cum_qty=dec(data.get("z")),
            last_price=last_price,
            commission=dec(data.get("n")),
            commission_asset=str(data.get("N") or ""),
            transaction_time=int(data.get("T") or data.get("E") or 0),
            trade_id=int(data.get("t", -1)),
            is_maker=bool(data.get("m", False)),
            cum_quote_qty=dec(data.get("Z")),
            last_quote_qty=dec(last_quote) if last_quote not in (None, "") else last_price * last_qty,
            expiry_reason=str(data.get("eR") or ""),
        )

    @property
    def own_client_order_id(self) -> str:
        """The order's client id: on a cancel Binance puts the cancel's id in ``c`` and the order's in ``C``."""
        if self.execution_type == "CANCELED" and self.orig_client_order_id:
            return self.orig_client_order_id
        return self.client_order_id

    def to_fill(self) -> Fill:
        return Fill(
            trade_id=self.trade_id,
            quantity=self.last_qty,
            price=self.last_price,
            quote_quantity=self.last_quote_qty,
            commission=self.commission,
            commission_asset=self.commission_asset,
            is_maker=self.is_maker,
            time_ms=self.transaction_time,
        )


@dataclass(frozen=True)
class RateLimit:
    """One element of exchangeInfo ``rateLimits``."""

    rateLimitType: str
    interval: str
    intervalNum: int
    limit: int

    @classmethod
    def parse(cls, data: dict[str, Any]) -> RateLimit:
        return cls(
            rateLimitType=str(data["rateLimitType"]),
            interval=str(data["interval"]),
            intervalNum=int(data.get("intervalNum", 1)),
            limit=int(data["limit"]),
        )


def parse_symbol_rules(data: dict[str, Any]) -> SymbolRules:
    """Turn one exchangeInfo ``symbols`` element into SymbolRules."""
    filters = {f.get("filterType"): f for f in data.get("filters") or ()}
    price = filters.get("PRICE_FILTER", {})
    lot = filters.get("LOT_SIZE", {})
    market_lot = filters.get("MARKET_LOT_SIZE", {})
    notional = filters.get("NOTIONAL")
    min_notional_filter = filters.get("MIN_NOTIONAL")
    by_side = filters.get("PERCENT_PRICE_BY_SIDE", {})
    percent = filters.get("PERCENT_PRICE", {})
    if notional is not None:
        min_notional = dec(notional.get("minNotional"))
        max_notional = dec(notional.get("maxNotional"))
        apply_min = bool(notional.get("applyMinToMarket", False))
        apply_max = bool(notional.get("applyMaxToMarket", False))
    elif min_notional_filter is not None:
        min_notional = dec(min_notional_filter.get("minNotional"))
        max_notional = ZERO
        apply_min = bool(min_notional_filter.get("applyToMarket", False))
        apply_max = False
    else:
        min_notional = max_notional = ZERO
        apply_min = apply_max = False
    order_types = tuple(str(t) for t in data.get("orderTypes") or ())
    status = str(data.get("status", "TRADING"))
    return SymbolRules(
        symbol=str(data["symbol"]),
        status=status,
        base_asset=str(data.get("baseAsset", "")),
        quote_asset=str(data.get("quoteAsset", "")),
        # Binance takes new orders only in TRADING (not in BREAK, HALT, AUCTION_MATCH, END_OF_DAY...).
        trading=status == "TRADING",
        min_price=dec(price.get("minPrice")),
        max_price=dec(price.get("maxPrice")),
        tick_size=dec(price.get("tickSize")),
        min_qty=dec(lot.get("minQty")),
        max_qty=dec(lot.get("maxQty")),
        step_size=dec(lot.get("stepSize")),
        market_min_qty=dec(market_lot.get("minQty")),
        market_max_qty=dec(market_lot.get("maxQty")),
        market_step_size=dec(market_lot.get("stepSize")),
        min_notional=min_notional,
        max_notional=max_notional,
        apply_min_to_market=apply_min,
        apply_max_to_market=apply_max,
        bid_multiplier_up=dec(by_side.get("bidMultiplierUp")),
        bid_multiplier_down=dec(by_side.get("bidMultiplierDown")),
        ask_multiplier_up=dec(by_side.get("askMultiplierUp")),
        ask_multiplier_down=dec(by_side.get("askMultiplierDown")),
        multiplier_up=dec(percent.get("multiplierUp")),
        multiplier_down=dec(percent.get("multiplierDown")),
        max_num_orders=int(filters.get("MAX_NUM_ORDERS", {}).get("maxNumOrders", 0) or 0),
        max_num_algo_orders=int(filters.get("MAX_NUM_ALGO_ORDERS", {}).get("maxNumAlgoOrders", 0) or 0),
        order_types=order_types,
        allowed_types=frozenset(ORDER_TYPE_EXT_TO_INT[t] for t in order_types if t in ORDER_TYPE_EXT_TO_INT),
        base_asset_precision=int(data.get("baseAssetPrecision", 8)),
        quote_asset_precision=int(data.get("quoteAssetPrecision", data.get("quotePrecision", 8))),
    )


@dataclass(frozen=True)
class ExchangeInfo:
    """GET /api/v3/exchangeInfo: the rate limits and every symbol's rules."""

    rateLimits: tuple[RateLimit, ...]
    symbols: tuple[SymbolRules, ...]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> ExchangeInfo:
        return cls(
            rateLimits=tuple(RateLimit.parse(r) for r in data.get("rateLimits") or ()),
            symbols=tuple(parse_symbol_rules(s) for s in data.get("symbols") or ()),
        )


def parse_balances(data: dict[str, Any]) -> list[Balance]:
    """GET /api/v3/account ``balances`` as domain balances."""
    return [
        Balance(asset=str(b["asset"]), free=dec(b.get("free")), locked=dec(b.get("locked")))
        for b in data.get("balances") or ()
    ]
