"""Configuration of the order service, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from shared.config import (
    DEFAULT_EXCHANGE_GATEWAY_ADDR,
    DEFAULT_ORDER_SERVICE_ADDR,
    DEFAULT_USER_SERVICE_ADDR,
    DEFAULT_VAR_DIR,
    ConfigError,
    env_bool,
    env_float,
    env_secret,
    env_sqlite_synchronous,
    env_str,
    sqlite_url,
)


@dataclass(frozen=True)
class Config:
    """Everything the service needs from its environment (tests build it directly)."""

    service_token: str
    listen_addr: str = DEFAULT_ORDER_SERVICE_ADDR
    db_url: str = f"sqlite:///{DEFAULT_VAR_DIR / 'order_service.db'}"
    user_service_addr: str = DEFAULT_USER_SERVICE_ADDR
    exchange_gateway_addr: str = DEFAULT_EXCHANGE_GATEWAY_ADDR
    admin_token: str = ""
    market_protection: Decimal = Decimal("0.05")
    auth_cache_seconds: float = 2.0
    rules_cache_seconds: float = 60.0
    reconcile_interval: float = 5.0
    resolve_after: float = 5.0
    resume_window: float = 60.0
    db_synchronous: str = "FULL"
    access_log: bool = False
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from environment variables."""
        env = os.environ if env is None else env
        raw_protection = env_str(env, "ORDER_MARKET_PROTECTION", "0.05")
        try:
            protection = Decimal(raw_protection)
        except InvalidOperation:
            raise ConfigError(f"ORDER_MARKET_PROTECTION must be a decimal like 0.05, got {raw_protection!r}") from None
        if not protection.is_finite() or protection < 0 or protection > 1:
            raise ConfigError("ORDER_MARKET_PROTECTION must be between 0 and 1")
        return cls(
            listen_addr=env_str(env, "ORDER_SERVICE_ADDR", DEFAULT_ORDER_SERVICE_ADDR),
            db_url=sqlite_url(env, "ORDER_DB_URL", "order_service.db"),
            user_service_addr=env_str(env, "USER_SERVICE_ADDR", DEFAULT_USER_SERVICE_ADDR),
            exchange_gateway_addr=env_str(env, "EXCHANGE_GATEWAY_ADDR", DEFAULT_EXCHANGE_GATEWAY_ADDR),
            service_token=env_secret(env, "TRADING_SERVICE_TOKEN"),
            admin_token=env_secret(env, "TRADING_ADMIN_TOKEN", ""),
            market_protection=protection,
            auth_cache_seconds=env_float(env, "ORDER_AUTH_CACHE_SECONDS", 2.0),
            rules_cache_seconds=env_float(env, "ORDER_RULES_CACHE_SECONDS", 60.0),
            reconcile_interval=env_float(env, "ORDER_RECONCILE_INTERVAL", 5.0),
            resolve_after=env_float(env, "ORDER_RESOLVE_AFTER", 5.0),
            resume_window=env_float(env, "ORDER_RESUME_WINDOW", 60.0),
            db_synchronous=env_sqlite_synchronous(env, "ORDER_DB_SYNCHRONOUS"),
            access_log=env_bool(env, "ORDER_ACCESS_LOG", False),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
        )
