"""Symbol rules, last prices and account balances, cached so that callers do not cost requests.

Rules come from exchangeInfo (read at start and refreshed). A last price is fetched at most once
per ``price_ttl_ms`` per symbol, and concurrent callers share one fetch; balances likewise.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from services.exchange_gateway.domain.errors import ExchangeError
from services.exchange_gateway.domain.model import Balance, SymbolRules
from services.exchange_gateway.service.ports import Exchange
from shared.errors import DomainError, NotFound, Unavailable

log = logging.getLogger("exchange_gateway.market")


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a shared task's exception as seen (its waiters may all have gone)."""
    if not task.cancelled():
        task.exception()


@dataclass(frozen=True)
class Price:
    symbol: str
    price: Decimal
    fetched_ms: int


class Market:
    """Rules, prices and balances of the exchange account."""

    def __init__(self, exchange: Exchange, *, price_ttl_ms: int = 1000, balance_ttl_ms: int = 1000):
        self.exchange = exchange
        self.price_ttl_ms = price_ttl_ms
        self.balance_ttl_ms = balance_ttl_ms
        self.rules: dict[str, SymbolRules] = {}
        self._prices: dict[str, Price] = {}
        self._price_fetches: dict[str, asyncio.Task[Price]] = {}
        self._balances: tuple[int, list[Balance]] | None = None
        self._balance_fetch: asyncio.Task[list[Balance]] | None = None

    async def refresh_rules(self) -> None:
        """Read exchangeInfo again: symbol rules and rate limits."""
        symbols = await self.exchange.load_exchange_info()
        self.rules = {r.symbol: r for r in symbols}

    def rules_for(self, symbol: str) -> SymbolRules:
        """A symbol's rules, or NOT_FOUND."""
        rules = self.rules.get(symbol)
        if rules is None:
            raise NotFound(f"symbol {symbol!r} is not listed", reason="UNKNOWN_SYMBOL")
        return rules

    def all_rules(self) -> list[SymbolRules]:
        return [self.rules[s] for s in sorted(self.rules)]

    async def last_price(self, symbol: str, *, deadline: float | None = None) -> Price:
        """The cached last price (at most ``price_ttl_ms`` old); one fetch per symbol at a time."""
        self.rules_for(symbol)
        cached = self._prices.get(symbol)
        if cached is not None and self.exchange.now_ms() - cached.fetched_ms <= self.price_ttl_ms:
            return cached
        task = self._price_fetches.get(symbol)
        if task is None:
            task = asyncio.create_task(self._fetch_price(symbol, deadline))
            self._price_fetches[symbol] = task

            def done(t: asyncio.Task[Price]) -> None:
                self._price_fetches.pop(symbol, None)
                _retrieve(t)

            task.add_done_callback(done)
        try:
            return await asyncio.shield(task)
        except ExchangeError as exc:
            raise Unavailable(f"cannot get the price of {symbol}: {exc.describe()}", reason="EXCHANGE_UNAVAILABLE")

    async def _fetch_price(self, symbol: str, deadline: float | None) -> Price:
        price = await self.exchange.last_price(symbol, deadline)
        entry = Price(symbol, price, self.exchange.now_ms())
        self._prices[symbol] = entry
        return entry

    async def price_for_checks(self, symbol: str, deadline: float | None) -> Decimal | None:
        """The last price for filter checks, or None when it cannot be had in time (the exchange still checks)."""
        try:
            return (await self.last_price(symbol, deadline=deadline)).price
        except DomainError as exc:
            log.debug("no price for filter checks", extra={"symbol": symbol, "error": exc.message})
            return None

    async def balances(self, *, deadline: float | None = None) -> list[Balance]:
        """Non-zero balances of the exchange account, sorted by asset (cached briefly)."""
        now = self.exchange.now_ms()
        if self._balances is not None and now - self._balances[0] <= self.balance_ttl_ms:
            return self._balances[1]
        if self._balance_fetch is None:
            self._balance_fetch = asyncio.create_task(self._fetch_balances(deadline))

            def balance_done(t: asyncio.Task[list[Balance]]) -> None:
                self._balance_fetch = None
                _retrieve(t)

            self._balance_fetch.add_done_callback(balance_done)
        try:
            return await asyncio.shield(self._balance_fetch)
        except ExchangeError as exc:
            raise Unavailable(f"cannot read the account: {exc.describe()}", reason="EXCHANGE_UNAVAILABLE")

    async def _fetch_balances(self, deadline: float | None) -> list[Balance]:
        raw = await self.exchange.balances(deadline)
        balances = sorted((b for b in raw if b.free or b.locked), key=lambda b: b.asset)
        self._balances = (self.exchange.now_ms(), balances)
        return balances
