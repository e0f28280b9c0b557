"""Symbol rules and last prices from the gateway, cached.

Rules change rarely: they are kept for ``rules_ttl`` and then refreshed in the background while
the old ones keep serving. Last prices are kept for a fraction of a second (the gateway itself
caches them for about a second); they only size the reservation of market buys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal

from services.order_service.domain.model import SymbolRules
from services.order_service.service.ports import GatewayPort
from shared.errors import InvalidArgument, NotFound

log = logging.getLogger("order_service.market")


class MarketData:
    """Cached symbol rules and last prices."""

    def __init__(
        self,
        gateway: GatewayPort,
        *,
        rules_ttl: float = 60.0,
        price_ttl: float = 0.5,
        timeout: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.gateway = gateway
        self.rules_ttl = rules_ttl
        self.price_ttl = price_ttl
        self.timeout = timeout
        self.clock = clock
        self._rules: dict[str, tuple[float, SymbolRules]] = {}
        self._prices: dict[str, tuple[float, Decimal]] = {}
        self._refreshing: dict[str, asyncio.Task[SymbolRules]] = {}

    async def preload(self) -> None:
        """Fetch every symbol's rules at once (best effort)."""
        try:
            all_rules = await self.gateway.list_symbol_rules(self.timeout)
        except Exception as exc:
            log.warning("could not preload symbol rules", extra={"error": str(exc)})
            return
        expires = self.clock() + self.rules_ttl
        for rules in all_rules:
            self._rules[rules.symbol] = (expires, rules)

    async def rules(self, symbol: str) -> SymbolRules:
        """The symbol's rules; INVALID_ARGUMENT (field symbol) for a symbol the exchange does not list."""
        cached = self._rules.get(symbol)
        if cached is not None:
            if cached[0] <= self.clock() and symbol not in self._refreshing:
                self._fetch(symbol).add_done_callback(_ignore_result)
            return cached[1]
        return await asyncio.shield(self._fetch(symbol))

    def _fetch(self, symbol: str) -> asyncio.Task[SymbolRules]:
        task = self._refreshing.get(symbol)
        if task is None:
            task = asyncio.create_task(self._load(symbol))
            self._refreshing[symbol] = task
            task.add_done_callback(lambda _t: self._refreshing.pop(symbol, None))
        return task

    async def _load(self, symbol: str) -> SymbolRules:
        try:
            rules = await self.gateway.get_symbol_rules(symbol, self.timeout)
        except NotFound:
            self._rules.pop(symbol, None)
            raise InvalidArgument("symbol", f"unknown symbol {symbol}") from None
        self._rules[symbol] = (self.clock() + self.rules_ttl, rules)
        return rules

    def listed_assets(self) -> set[str]:
        """The base and quote assets of every symbol whose rules are cached (assets the exchange lists)."""
        return {asset for _, rules in list(self._rules.values()) for asset in (rules.base_asset, rules.quote_asset)}

    async def last_price(self, symbol: str) -> Decimal:
        """The symbol's last traded price (cached for ``price_ttl``)."""
        cached = self._prices.get(symbol)
        now = self.clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        price = await self.gateway.get_last_price(symbol, self.timeout)
        self._prices[symbol] = (now + self.price_ttl, price)
        return price


def _ignore_result(task: asyncio.Task[SymbolRules]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not refresh symbol rules", extra={"error": str(task.exception())})
