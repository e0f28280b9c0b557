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
    env_int,
    env_secret,
    env_sqlite_synchronous,
    env_str,
    sqlite_url,
)
from shared.metrics import metrics_addr
from shared.tls import PLAINTEXT, TlsSettings


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
    fee_maker: Decimal = Decimal("0.001")
    fee_taker: Decimal = Decimal("0.001")
    effect_max_attempts: int = 5
    auth_cache_seconds: float = 2.0
    rules_cache_seconds: float = 60.0
    reconcile_interval: float = 5.0
    resolve_after: float = 5.0
    resume_window: float = 60.0
    submit_window: float = 25.0
    report_interval: float = 300.0
    watch_retention_hours: float = 24.0
    user_orders_per_second: Decimal = Decimal(10)
    user_max_open_orders: int = 100
    db_synchronous: str = "FULL"
    access_log: bool = False
    # Unary calls in progress at most; more are refused RESOURCE_EXHAUSTED at once (0: no limit)
    max_in_flight: int = 1000
    log_level: str = "INFO"
    # Prometheus /metrics (host:port; "" serves none) and the OTLP endpoint for traces ("" exports none)
    metrics_addr: str = ""
    otlp_endpoint: str = ""
    # TRADING_TLS_DIR, TRADING_ALLOW_PLAINTEXT and the internal ports of the services it calls (shared.tls)
    tls: TlsSettings = PLAINTEXT

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from environment variables."""
        env = os.environ if env is None else env
        attempts = env_int(env, "ORDER_EFFECT_MAX_ATTEMPTS", 5)
        if attempts < 1:
            raise ConfigError("ORDER_EFFECT_MAX_ATTEMPTS must be at least 1")
        return cls(
            listen_addr=env_str(env, "ORDER_SERVICE_ADDR", DEFAULT_ORDER_SERVICE_ADDR),
            db_url=sqlite_url(env, "ORDER_DB_URL", "order_service.db"),
            user_service_addr=env_str(env, "USER_SERVICE_ADDR", DEFAULT_USER_SERVICE_ADDR),
            exchange_gateway_addr=env_str(env, "EXCHANGE_GATEWAY_ADDR", DEFAULT_EXCHANGE_GATEWAY_ADDR),
            service_token=env_secret(env, "TRADING_SERVICE_TOKEN"),
            admin_token=env_secret(env, "TRADING_ADMIN_TOKEN", ""),
            market_protection=_fraction(env, "ORDER_MARKET_PROTECTION", "0.05"),
            fee_maker=_fraction(env, "ORDER_FEE_MAKER", "0.001"),
            fee_taker=_fraction(env, "ORDER_FEE_TAKER", "0.001"),
            effect_max_attempts=attempts,
            auth_cache_seconds=env_float(env, "ORDER_AUTH_CACHE_SECONDS", 2.0),
            rules_cache_seconds=env_float(env, "ORDER_RULES_CACHE_SECONDS", 60.0),
            reconcile_interval=env_float(env, "ORDER_RECONCILE_INTERVAL", 5.0),
            resolve_after=env_float(env, "ORDER_RESOLVE_AFTER", 5.0),
            resume_window=env_float(env, "ORDER_RESUME_WINDOW", 60.0),
            submit_window=env_float(env, "ORDER_SUBMIT_WINDOW", 25.0),
            report_interval=env_float(env, "ORDER_RECONCILIATION_REPORT_INTERVAL", 300.0),
            watch_retention_hours=env_float(env, "ORDER_WATCH_RETENTION_HOURS", 24.0),
            user_orders_per_second=_positive(env, "ORDER_USER_ORDERS_PER_SECOND", "10"),
            user_max_open_orders=env_int(env, "ORDER_USER_MAX_OPEN_ORDERS", 100),
            db_synchronous=env_sqlite_synchronous(env, "ORDER_DB_SYNCHRONOUS"),
            access_log=env_bool(env, "ORDER_ACCESS_LOG", False),
            max_in_flight=_not_negative(env, "ORDER_MAX_IN_FLIGHT", 1000),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
            metrics_addr=metrics_addr(env, "ORDER_METRICS_ADDR"),
            otlp_endpoint=env_str(env, "OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            tls=TlsSettings.from_env(env),
        )


def _not_negative(env: Mapping[str, str], name: str, default: int) -> int:
    """A whole number, 0 or more, naming the variable when it is not."""
    value = env_int(env, name, default)
    if value < 0:
        raise ConfigError(f"{name} must be 0 or more")
    return value


def _fraction(env: Mapping[str, str], name: str, default: str) -> Decimal:
    """A decimal between 0 and 1 (a rate such as 0.001), naming the variable when it is not."""
    raw = env_str(env, name, default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal like {default}, got {raw!r}") from None
    if not value.is_finite() or value < 0 or value > 1:
        raise ConfigError(f"{name} must be between 0 and 1")
    return value


def _positive(env: Mapping[str, str], name: str, default: str) -> Decimal:
    """A positive decimal (a rate such as 10 or 0.5), naming the variable when it is not."""
    raw = env_str(env, name, default)
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ConfigError(f"{name} must be a positive number like {default}, got {raw!r}") from None
    if not value.is_finite() or value <= 0:
        raise ConfigError(f"{name} must be a positive number like {default}")
    return value
