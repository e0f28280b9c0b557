"""The symbols the simulator lists, with Binance's filters at realistic values, and their exchangeInfo form."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

D = Decimal
_FIVE = D(5)
_ONE_FIFTH = D("0.2")
_MAX_NOTIONAL = D(9000000)
_ONE = D(1)


def fmt8(value: Decimal) -> str:
    """Binance's wire form of a price, quantity or amount: a string with 8 decimals."""
    return f"{value:.8f}"


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """One spot symbol and its filters (values as on Binance in 2026, rounded)."""

    symbol: str
    base: str
    quote: str
    initial_price: Decimal
    # PRICE_FILTER
    min_price: Decimal
    max_price: Decimal
    tick_size: Decimal
    # LOT_SIZE
    min_qty: Decimal
    max_qty: Decimal
    step_size: Decimal
    # MARKET_LOT_SIZE (a zero step means "no step rule", as Binance publishes it)
    market_min_qty: Decimal
    market_max_qty: Decimal
    market_step_size: Decimal
    # NOTIONAL
    min_notional: Decimal = _FIVE
    max_notional: Decimal = _MAX_NOTIONAL
    apply_min_to_market: bool = True
    apply_max_to_market: bool = False
    # PERCENT_PRICE_BY_SIDE
    bid_multiplier_up: Decimal = _FIVE
    bid_multiplier_down: Decimal = _ONE_FIFTH
    ask_multiplier_up: Decimal = _FIVE
    ask_multiplier_down: Decimal = _ONE_FIFTH
    avg_price_mins: int = 5
    max_num_orders: int = 200
    max_num_algo_orders: int = 5
    # The synthetic book's default depth: levels per side, each of this base quantity.
    default_level_quantity: Decimal = _ONE
    default_levels: int = 20
    precision: int = 8

    def filters(self) -> list[dict[str, Any]]:
        """The symbol's ``filters`` array as exchangeInfo shows it."""
        return [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": fmt8(self.min_price),
                "maxPrice": fmt8(self.max_price),
                "tickSize": fmt8(self.tick_size),
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": fmt8(self.min_qty),
                "maxQty": fmt8(self.max_qty),
                "stepSize": fmt8(self.step_size),
            },
            {"filterType": "ICEBERG_PARTS", "limit": 100},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": fmt8(self.market_min_qty),
                "maxQty": fmt8(self.market_max_qty),
                "stepSize": fmt8(self.market_step_size),
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": str(self.bid_multiplier_up),
                "bidMultiplierDown": str(self.bid_multiplier_down),
                "askMultiplierUp": str(self.ask_multiplier_up),
                "askMultiplierDown": str(self.ask_multiplier_down),
                "avgPriceMins": self.avg_price_mins,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": fmt8(self.min_notional),
                "applyMinToMarket": self.apply_min_to_market,
                "maxNotional": fmt8(self.max_notional),
                "applyMaxToMarket": self.apply_max_to_market,
                "avgPriceMins": self.avg_price_mins,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": self.max_num_orders},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": self.max_num_algo_orders},
        ]

    def exchange_info(self) -> dict[str, Any]:
        """The symbol's entry in exchangeInfo ``symbols``."""
        return {
            "symbol": self.symbol,
            "status": "TRADING",
            "baseAsset": self.base,
            "baseAssetPrecision": self.precision,
            "quoteAsset": self.quote,
            "quotePrecision": self.precision,
            "quoteAssetPrecision": self.precision,
            "baseCommissionPrecision": self.precision,
            "quoteCommissionPrecision": self.precision,
            "orderTypes": list(ORDER_TYPES),
            "icebergAllowed": False,
            "ocoAllowed": False,
            "otoAllowed": False,
            "opoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "amendAllowed": False,
            "pegInstructionsAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": self.filters(),
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "DECREMENT"],
        }


ORDER_TYPES = ("LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT")

DEFAULT_SYMBOLS: tuple[SymbolSpec, ...] = (
    SymbolSpec(
        symbol="BTCUSDT",
        base="BTC",
        quote="USDT",
        initial_price=D("50000.00"),
        min_price=D("0.01"),
        max_price=D("1000000"),
        tick_size=D("0.01"),
        min_qty=D("0.00001"),
        max_qty=D("9000"),
        step_size=D("0.00001"),
        market_min_qty=D(0),
        market_max_qty=D("100"),
        market_step_size=D(0),
        default_level_quantity=D(5),
    ),
    SymbolSpec(
        symbol="ETHUSDT",
        base="ETH",
        quote="USDT",
        initial_price=D("3000.00"),
        min_price=D("0.01"),
        max_price=D("1000000"),
        tick_size=D("0.01"),
        min_qty=D("0.0001"),
        max_qty=D("9000"),
        step_size=D("0.0001"),
        market_min_qty=D(0),
        market_max_qty=D("2000"),
        market_step_size=D(0),
        default_level_quantity=D(100),
    ),
    SymbolSpec(
        symbol="BNBUSDT",
        base="BNB",
        quote="USDT",
        initial_price=D("600.00"),
        min_price=D("0.01"),
        max_price=D("100000"),
        tick_size=D("0.01"),
        min_qty=D("0.001"),
        max_qty=D("900000"),
        step_size=D("0.001"),
        market_min_qty=D(0),
        market_max_qty=D("5000"),
        market_step_size=D(0),
        default_level_quantity=D(250),
    ),
)
