"""The simulator's state in one object: exchange, rate limiter, armed faults, WebSocket clients, random walk.

All of it lives in memory (the simulator stands for an outside exchange) and runs on one event loop, so request
handlers and the random walk never interleave inside a matching step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from services.exchange_simulator import errors, signing
from services.exchange_simulator.config import SimConfig
from services.exchange_simulator.faults import Faults
from services.exchange_simulator.matching import Event, Exchange, Order, floor_to_step
from services.exchange_simulator.rate_limits import Limits, RateLimiter
from services.exchange_simulator.symbols import DEFAULT_SYMBOLS, fmt8
from services.exchange_simulator.wsapi import WsHub
from shared.config import ConfigError
from shared.logs import security_log

log = logging.getLogger(__name__)

REVERSION = Decimal("0.002")
"""Share of the distance back to the initial price the random walk adds per step, so a long demo stays sane."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Simulator:
    """Everything a request handler needs."""

    def __init__(self, config: SimConfig, clock: Callable[[], int] | None = None):
        self.config = config
        self.clock = clock or now_ms
        self.keys: dict[str, signing.Verifier] = {config.api_key: signing.HmacVerifier(config.api_secret)}
        if config.public_key_file:
            if config.public_key_api_key == config.api_key:
                raise ConfigError("SIM_PUBLIC_KEY_API_KEY must differ from BINANCE_API_KEY (the HMAC key)")
            self.keys[config.public_key_api_key] = signing.load_public_key(config.public_key_file)
        self.exchange = Exchange(DEFAULT_SYMBOLS, dict(config.balances), clock=self.clock)
        self.exchange.set_commission(config.commission_asset, config.commission_rate)
        self.exchange.on_accept = self._on_accept
        self.exchange.on_first_fill = self._on_first_fill
        self.limiter = RateLimiter(self.default_limits())
        self.faults = Faults()
        self.hub = WsHub(self)
        self.walk_enabled = config.random_walk
        self.walk_interval_ms = config.random_walk_interval_ms
        self.walk_step_bps = config.random_walk_step_bps
        self._rng = random.Random(config.random_walk_seed)
        self._walk_task: asyncio.Task[None] | None = None
        self.orders_rejected = 0
        self.requests = 0

    def default_limits(self) -> Limits:
        return Limits(
            weight_per_minute=self.config.weight_per_minute,
            orders_per_10s=self.config.orders_per_10s,
            orders_per_day=self.config.orders_per_day,
            raw_requests_per_5m=self.config.raw_requests_per_5m,
            ban_base_seconds=self.config.ban_base_seconds,
        )

    # ------------------------------------------------------------------ hooks and events

    def _on_accept(self, order: Order, now: int) -> None:
        self.limiter.count_order(now)

    def _on_first_fill(self, order: Order, now: int) -> None:
        self.limiter.uncount_order(order.time, now)

    def publish(self, events: list[Event]) -> None:
        """Send engine events to every subscribed WebSocket API connection."""
        if events:
            self.hub.broadcast(events)

    # ------------------------------------------------------------------ security

    def authenticate(
        self, api_key: str | None, raw_query: str, raw_body: str, params: Mapping[str, str], now: int
    ) -> None:
        """Binance's checks for a SIGNED endpoint: API key, signature (HMAC, Ed25519 or RSA), timestamp, recvWindow."""
        if not api_key:
            raise errors.bad_api_key_format()
        verifier = self.verifier(api_key)
        payload, signature = signing.rest_payload(raw_query, raw_body)
        if not signature:
            raise errors.mandatory("signature")
        if not verifier.verify(payload, signature):
            security_log.warning("exchange simulator: invalid signature")
            raise errors.bad_signature()
        self.check_time(params.get("timestamp"), params.get("recvWindow"), now)

    def verifier(self, api_key: str) -> signing.Verifier:
        """The signature check of a known API key; -2015 for any other key."""
        verifier = self.keys.get(api_key)
        if verifier is None:
            security_log.warning("exchange simulator: unknown API key")
            raise errors.rejected_api_key()
        return verifier

    def check_time(self, timestamp: Any, recv_window: Any, now: int) -> None:
        """-1102 without a timestamp, -1131 for a bad recvWindow, -1021 outside the window."""
        stamp = signing.parse_timestamp(timestamp)
        window = signing.parse_recv_window(None if recv_window is None else str(recv_window))
        if self.config.verify_timestamps:
            signing.check_timestamp(stamp, window, now)

    # ------------------------------------------------------------------ control

    def reset(
        self,
        balances: dict[str, Decimal] | None = None,
        prices: dict[str, Decimal] | None = None,
        *,
        next_order_id: int | None = None,
        next_trade_id: int | None = None,
    ) -> None:
        """Clear orders, trades, counters, faults, bans; limits and commission back to the configured ones.

        Order and trade ids go on increasing unless ``next_order_id`` / ``next_trade_id`` set them.
        """
        self.exchange.reset(
            dict(self.config.balances) if balances is None else balances,
            prices,
            next_order_id=next_order_id,
            next_trade_id=next_trade_id,
        )
        self.exchange.set_commission(self.config.commission_asset, self.config.commission_rate)
        self.limiter = RateLimiter(self.default_limits())
        self.faults.clear()
        self.hub.refuse_until = 0
        self.orders_rejected = 0
        self.requests = 0

    def stats(self) -> dict[str, Any]:
        """Counters tests use to check a client's behaviour (429s, 418s, use of each ORDERS window)."""
        now = self.clock()
        limiter = self.limiter
        return {
            "http_429": limiter.http_429,
            "http_418": limiter.http_418,
            "requests": self.requests,
            "orders_accepted": self.exchange.orders_accepted,
            "orders_rejected": self.orders_rejected,
            "orders_per_10s_window": {str(k): v for k, v in limiter.orders_per_10s_window.items()},
            "weight_per_minute_window": {str(k): v for k, v in limiter.weight_per_minute_window.items()},
            "used_weight_1m": limiter.used_weight(now),
            "order_count_10s": limiter.order_count_10s(now),
            "order_count_1d": limiter.order_count_day(now),
            "banned_until": limiter.banned_until if limiter.banned_until > now else 0,
            "open_orders": self.exchange.open_order_count(),
            "ws_connections": len(self.hub.connections),
            "ws_subscriptions": sum(1 for c in self.hub.connections if c.subscription_id is not None),
            "limits": {
                "weight_per_minute": limiter.limits.weight_per_minute,
                "orders_per_10s": limiter.limits.orders_per_10s,
                "orders_per_day": limiter.limits.orders_per_day,
                "raw_requests_per_5m": limiter.limits.raw_requests_per_5m,
                "ban_base_seconds": limiter.limits.ban_base_seconds,
            },
            "random_walk": self.walk_enabled,
            "commission": self.commission_settings(),
            "faults": self.faults.describe(),
        }

    def commission_settings(self) -> dict[str, str]:
        """The account's commission as the control API shows it: ``{"asset", "rate"}``."""
        return {"asset": self.exchange.commission_asset, "rate": fmt8(self.exchange.commission_rate)}

    # ------------------------------------------------------------------ random walk

    def set_random_walk(self, enabled: bool, interval_ms: int | None = None, step_bps: Decimal | None = None) -> None:
        if interval_ms is not None:
            self.walk_interval_ms = interval_ms
        if step_bps is not None:
            self.walk_step_bps = step_bps
        self.walk_enabled = enabled
        if enabled and self._walk_task is None:
            self._walk_task = asyncio.get_running_loop().create_task(self._walk_loop())
        elif not enabled and self._walk_task is not None:
            self._walk_task.cancel()
            self._walk_task = None

    def walk_step(self) -> None:
        """Move every price by a random step of at most ``step_bps`` (in ticks), then match."""
        for symbol, market in self.exchange.markets.items():
            tick = market.spec.tick_size
            price = market.last_price
            max_ticks = max(1, int(price * self.walk_step_bps / 10000 / tick))
            delta = self._rng.randint(-max_ticks, max_ticks) * tick
            delta += floor_to_step((market.spec.initial_price - price) * REVERSION, tick)
            new_price = max(tick, price + delta)
            if new_price != price:
                self.publish(self.exchange.set_price(symbol, new_price))

    async def _walk_loop(self) -> None:
        while True:
            await asyncio.sleep(self.walk_interval_ms / 1000)
            try:
                self.walk_step()
            except Exception:  # keep walking; a bug here must not stop the demo
                log.exception("random walk step failed")

    async def start(self) -> None:
        """Start background work (the random walk when configured)."""
        if self.walk_enabled:
            self.set_random_walk(True)

    async def stop(self) -> None:
        """Stop background work and close every WebSocket API connection."""
        task, self._walk_task = self._walk_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.hub.close_all()
