"""The order mix of the benchmark: which operation comes next and what order it sends. Pure: no I/O."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

REST = "rest"
MARKETABLE = "marketable"
CANCEL = "cancel"

# Per block of 20 operations: 12 resting LIMIT (60%), 5 marketable (25%), 3 cancels (15%).
DEFAULT_MIX: dict[str, int] = {REST: 12, MARKETABLE: 5, CANCEL: 3}

# Used when the simulator's exchangeInfo cannot be read (its initial listing).
FALLBACK_SYMBOLS: dict[str, dict[str, str]] = {
    symbol: {"base": base, "quote": "USDT", "tick": "0.01", "step": step, "min_notional": "5", "price": price}
    for symbol, base, step, price in (
        ("BTCUSDT", "BTC", "0.00001", "50000"),
        ("ETHUSDT", "ETH", "0.0001", "3000"),
        ("BNBUSDT", "BNB", "0.001", "600"),
    )
}


@dataclass(frozen=True)
class SymbolRules:
    """The filters of one symbol that the benchmark's orders must respect."""

    symbol: str
    base: str
    quote: str
    tick: Decimal
    step: Decimal
    min_notional: Decimal

    @classmethod
    def from_dict(cls, symbol: str, data: Mapping[str, str]) -> SymbolRules:
        """Build from the JSON form the orchestrator hands to the load process."""
        return cls(
            symbol=symbol,
            base=data["base"],
            quote=data["quote"],
            tick=Decimal(data["tick"]),
            step=Decimal(data["step"]),
            min_notional=Decimal(data["min_notional"]),
        )


def symbols_from_exchange_info(info: Mapping[str, Any], prices: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """Extract tick, step and minimum notional of every TRADING symbol from Binance's exchangeInfo JSON."""
    out: dict[str, dict[str, str]] = {}
    for entry in info.get("symbols", []):
        if entry.get("status") != "TRADING":
            continue
        filters = {f["filterType"]: f for f in entry.get("filters", [])}
        try:
            out[entry["symbol"]] = {
                "base": entry["baseAsset"],
                "quote": entry["quoteAsset"],
                "tick": str(Decimal(filters["PRICE_FILTER"]["tickSize"]).normalize()),
                "step": str(Decimal(filters["LOT_SIZE"]["stepSize"]).normalize()),
                "min_notional": str(Decimal(filters.get("NOTIONAL", {}).get("minNotional", "5")).normalize()),
                "price": prices.get(entry["symbol"], ""),
            }
        except KeyError:
            continue
    return out


def floor_to(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` down to a multiple of ``step``."""
    return (value / step).to_integral_value(rounding=ROUND_FLOOR) * step


def ceil_to(value: Decimal, step: Decimal) -> Decimal:
    """Round ``value`` up to a multiple of ``step``."""
    return (value / step).to_integral_value(rounding=ROUND_CEILING) * step


def plain(value: Decimal) -> str:
    """A decimal string without exponent (``"0.00030"``, never ``"3E-4"``)."""
    return f"{value:f}"


@dataclass(frozen=True)
class OrderSpec:
    """One PlaceOrder the benchmark sends, in wire terms (enum names, decimal strings)."""

    symbol: str
    side: str  # "BUY" | "SELL"
    type: str  # "LIMIT" | "MARKET"
    quantity: str
    price: str
    time_in_force: str  # "GTC" | "IOC" | ""


class OpStream:
    """An endless, shuffled sequence of operation kinds that keeps the mix exact over every block."""

    def __init__(self, mix: Mapping[str, int] | None = None, seed: int = 1):
        weights = dict(mix or DEFAULT_MIX)
        self._block = [kind for kind, count in weights.items() for _ in range(count)]
        self._rng = random.Random(seed)
        self._iter: Iterator[str] = iter(())

    def next(self) -> str:
        """Return the next operation kind."""
        try:
            return next(self._iter)
        except StopIteration:
            block = list(self._block)
            self._rng.shuffle(block)
            self._iter = iter(block)
            return next(self._iter)


class OrderFactory:
    """Builds resting and marketable orders around the current price of a symbol."""

    def __init__(
        self,
        rules: Mapping[str, SymbolRules],
        *,
        notional: Decimal = Decimal(15),
        rest_min_bps: int = 5,
        rest_max_bps: int = 30,
        cross_bps: int = 100,
        seed: int = 1,
    ):
        self.rules = dict(rules)
        self.notional = notional
        self.rest_min_bps = rest_min_bps
        self.rest_max_bps = rest_max_bps
        self.cross_bps = cross_bps
        self._rng = random.Random(seed)
        self._marketable_count = 0

    def quantity(self, rules: SymbolRules, price: Decimal) -> Decimal:
        """A quantity worth about ``notional`` (and at least twice the minimum notional) at ``price``."""
        target = max(self.notional, rules.min_notional * 2)
        return max(ceil_to(target / price, rules.step), rules.step)

    def resting(self, symbol: str, side: str, last: Decimal) -> OrderSpec:
        """A GTC LIMIT a few basis points away from ``last`` on the passive side, so it rests."""
        rules = self.rules[symbol]
        bps = Decimal(self._rng.randint(self.rest_min_bps, self.rest_max_bps)) / Decimal(10_000)
        price = floor_to(last * (1 - bps), rules.tick) if side == "BUY" else ceil_to(last * (1 + bps), rules.tick)
        qty = self.quantity(rules, price)
        return OrderSpec(symbol, side, "LIMIT", plain(qty), plain(price), "GTC")

    def marketable(self, symbol: str, side: str, last: Decimal) -> OrderSpec:
        """Alternately a MARKET order and a LIMIT IOC crossing ``last`` by ``cross_bps``."""
        rules = self.rules[symbol]
        self._marketable_count += 1
        qty = self.quantity(rules, last)
        if self._marketable_count % 2:
            return OrderSpec(symbol, side, "MARKET", plain(qty), "", "")
        cross = Decimal(self.cross_bps) / Decimal(10_000)
        price = ceil_to(last * (1 + cross), rules.tick) if side == "BUY" else floor_to(last * (1 - cross), rules.tick)
        return OrderSpec(symbol, side, "LIMIT", plain(qty), plain(price), "IOC")
