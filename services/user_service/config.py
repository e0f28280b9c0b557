"""Configuration of the user service, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from services.user_service.domain.validation import ASSET
from shared.config import (
    DEFAULT_EXCHANGE_GATEWAY_ADDR,
    DEFAULT_USER_SERVICE_ADDR,
    ConfigError,
    env_float,
    env_int,
    env_secret,
    env_str,
    sqlite_url,
)
from shared.db import check_db_url
from shared.metrics import metrics_addr
from shared.tls import PLAINTEXT, TlsSettings

DB_FILENAME = "user_service.db"


@dataclass(frozen=True)
class Config:
    """Everything the service needs from its environment. Tests build it directly.

    ``listen_addr`` may use port 0 (a free port); ``db_url`` is a SQLite file or PostgreSQL (psycopg)
    URL. The two tokens are secrets: they are kept out of ``repr`` and masked in every log line.
    """

    listen_addr: str
    db_url: str
    admin_token: str = field(repr=False)
    service_token: str = field(repr=False)
    log_level: str = "INFO"
    db_synchronous: str = "FULL"
    """SQLite ``synchronous``: FULL syncs every commit (durable across power loss); NORMAL does not."""
    max_batch: int = 64
    """Most write requests committed together in one transaction (group commit)."""
    access_log: bool = True
    exchange_gateway_addr: str = DEFAULT_EXCHANGE_GATEWAY_ADDR
    """Where to ask for the assets the exchange lists (ListSymbolRules), unless ``assets`` is set."""
    assets: tuple[str, ...] = ()
    """Fixed list of the assets deposits and withdrawals may use; empty means "ask the gateway"."""
    assets_refresh_seconds: float = 60.0
    """How long the gateway's asset list is used before it is refreshed."""
    metrics_addr: str = ""
    """Where to serve Prometheus /metrics (host:port); empty: not served."""
    otlp_endpoint: str = ""
    """The OTLP/gRPC endpoint spans are exported to; empty: none exported."""
    tls: TlsSettings = PLAINTEXT
    """TRADING_TLS_DIR, TRADING_ALLOW_PLAINTEXT, its own and the gateway's internal port (shared.tls)."""
    auth_slow_after: int = 5
    """Failed authentications from one address (or against one key) within a minute before answers slow down."""
    auth_ban_after: int = 20
    """Failed authentications from one address (or against one key) within a minute before it is refused."""
    auth_ban_seconds: float = 300.0
    """How long an address is refused."""
    audit_window_seconds: float = 60.0
    """Failed authentications and denials are recorded once per address, key and this window."""

    def __post_init__(self) -> None:
        if not 0 < self.auth_slow_after <= self.auth_ban_after:
            raise ConfigError(
                f"USER_AUTH_SLOW_AFTER ({self.auth_slow_after}) must be at least 1 and at most "
                f"USER_AUTH_BAN_AFTER ({self.auth_ban_after})"
            )
        if self.auth_ban_seconds <= 0 or self.audit_window_seconds <= 0:
            raise ConfigError("USER_AUTH_BAN_SECONDS and USER_AUDIT_WINDOW_SECONDS must be positive")
        if not self.admin_token or not self.service_token:
            raise ConfigError("TRADING_ADMIN_TOKEN and TRADING_SERVICE_TOKEN must be set")
        if self.admin_token == self.service_token:
            raise ConfigError("TRADING_ADMIN_TOKEN and TRADING_SERVICE_TOKEN must differ")
        check_db_url("USER_DB_URL", self.db_url)
        if self.db_synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
            raise ConfigError(f"USER_DB_SYNCHRONOUS must be FULL, NORMAL or EXTRA, got {self.db_synchronous!r}")
        for asset in self.assets:
            if not ASSET.fullmatch(asset):
                raise ConfigError(
                    f"USER_ASSETS must be comma-separated asset codes such as BTC,USDT (2 to 20 characters of "
                    f"A-Z and 0-9), got {asset!r}"
                )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from environment variables; raise ConfigError naming what is wrong."""
        env = os.environ if env is None else env
        return cls(
            listen_addr=env_str(env, "USER_SERVICE_ADDR", DEFAULT_USER_SERVICE_ADDR),
            db_url=sqlite_url(env, "USER_DB_URL", DB_FILENAME),
            admin_token=env_secret(env, "TRADING_ADMIN_TOKEN"),
            service_token=env_secret(env, "TRADING_SERVICE_TOKEN"),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
            db_synchronous=env_str(env, "USER_DB_SYNCHRONOUS", "FULL").upper(),
            max_batch=env_int(env, "USER_DB_MAX_BATCH", 64),
            exchange_gateway_addr=env_str(env, "EXCHANGE_GATEWAY_ADDR", DEFAULT_EXCHANGE_GATEWAY_ADDR),
            assets=tuple(a.strip() for a in env.get("USER_ASSETS", "").split(",") if a.strip()),
            metrics_addr=metrics_addr(env, "USER_METRICS_ADDR"),
            otlp_endpoint=env_str(env, "OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            auth_slow_after=env_int(env, "USER_AUTH_SLOW_AFTER", 5),
            auth_ban_after=env_int(env, "USER_AUTH_BAN_AFTER", 20),
            auth_ban_seconds=env_float(env, "USER_AUTH_BAN_SECONDS", 300.0),
            audit_window_seconds=env_float(env, "USER_AUDIT_WINDOW_SECONDS", 60.0),
            tls=TlsSettings.from_env(env),
        )
