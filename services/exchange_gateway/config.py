"""Configuration of the exchange gateway, read from the environment in one place.

``BINANCE_ENV`` picks the exchange (``sim``, ``testnet`` or ``live``) and with it the default URLs;
``BINANCE_BASE_URL`` / ``BINANCE_WS_API_URL`` / ``BINANCE_STREAM_URL`` override them. Keys come from
the environment only: with ``sim`` they default to the simulator's development pair, with ``testnet``
and ``live`` they are required. The key is HMAC (``BINANCE_API_SECRET``) or Ed25519 / RSA
(``BINANCE_PRIVATE_KEY_FILE``, a PEM file, with ``BINANCE_PRIVATE_KEY_PASSPHRASE`` when it is encrypted),
never both; bootstrap reads the file.
Secrets are registered for masking and left out of ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.config import (
    DEFAULT_EXCHANGE_GATEWAY_ADDR,
    DEFAULT_SIM_PORT,
    DEFAULT_USER_SERVICE_ADDR,
    SIM_DEV_API_KEY,
    SIM_DEV_API_SECRET,
    ConfigError,
    env_float,
    env_int,
    env_secret,
    env_sqlite_synchronous,
    env_str,
    sqlite_url,
)
from shared.metrics import metrics_addr
from shared.tls import PLAINTEXT, TlsSettings

ENVIRONMENTS = ("sim", "testnet", "live")
FOREIGN_ORDER_POLICIES = ("report", "cancel")
TESTNET_BASE_URL = "https://testnet.binance.vision"
TESTNET_WS_API_URL = "wss://ws-api.testnet.binance.vision/ws-api/v3"
LIVE_BASE_URL = "https://api.binance.com"
LIVE_WS_API_URL = "wss://ws-api.binance.com:443/ws-api/v3"
TESTNET_STREAM_URL = "wss://stream.testnet.binance.vision"
LIVE_STREAM_URL = "wss://stream.binance.com:9443"


def default_urls(binance_env: str, sim_port: int = DEFAULT_SIM_PORT) -> tuple[str, str]:
    """(REST base URL, WebSocket API URL) of an environment."""
    if binance_env == "sim":
        return f"http://127.0.0.1:{sim_port}", f"ws://127.0.0.1:{sim_port}/ws-api/v3"
    if binance_env == "testnet":
        return TESTNET_BASE_URL, TESTNET_WS_API_URL
    if binance_env == "live":
        return LIVE_BASE_URL, LIVE_WS_API_URL
    raise ConfigError(f"BINANCE_ENV must be one of {', '.join(ENVIRONMENTS)}, got {binance_env!r}")


def default_stream_url(binance_env: str, base_url: str) -> str:
    """The market data streams' base URL of an environment; the simulator serves them on its REST port."""
    if binance_env == "testnet":
        return TESTNET_STREAM_URL
    if binance_env == "live":
        return LIVE_STREAM_URL
    scheme, sep, rest = base_url.partition("://")
    return f"{'wss' if scheme == 'https' else 'ws'}{sep}{rest}".rstrip("/") if sep else base_url


_SIM_BASE, _SIM_WS = default_urls("sim")


@dataclass(frozen=True)
class Config:
    """Everything the service needs from its environment (tests build it directly)."""

    listen_addr: str = DEFAULT_EXCHANGE_GATEWAY_ADDR
    db_url: str = "sqlite:///var/exchange_gateway.db"
    binance_env: str = "sim"
    base_url: str = _SIM_BASE
    ws_api_url: str = _SIM_WS
    # Market data streams' base URL ("" derives it from binance_env and base_url, see default_stream_url).
    stream_url: str = ""
    api_key: str = field(default=SIM_DEV_API_KEY, repr=False)
    api_secret: str = field(default=SIM_DEV_API_SECRET, repr=False)
    # An Ed25519 or RSA private key (PEM) instead of the HMAC secret; "" for HMAC.
    private_key_file: str = ""
    private_key_passphrase: str = field(default="", repr=False)
    service_token: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)
    log_level: str = "INFO"
    # Binance request tuning
    recv_window_ms: int = 5000
    request_timeout_s: float = 10.0
    http_pool_size: int = 64
    # Rate limiting: share of each limit kept free, window-edge guard, time kept for the round trip
    rate_limit_margin: float = 0.02
    window_guard_ms: float = 100.0
    deadline_margin_ms: float = 100.0
    # Caches and upkeep
    price_ttl_ms: int = 1000
    # Market data: how long a REST snapshot is shared while a symbol's streams are not live, and after how
    # long a symbol nobody asks about is unsubscribed.
    market_data_ttl_ms: int = 1000
    market_data_idle_s: float = 300.0
    reconcile_interval_s: float = 60.0
    exchange_info_interval_s: float = 600.0
    time_sync_interval_s: float = 300.0
    # User data stream
    ws_heartbeat_s: float = 20.0
    ws_reconnect_max_s: float = 10.0
    # Start-up: how long to keep trying to reach the exchange
    startup_timeout_s: float = 30.0
    db_synchronous: str = "FULL"
    # Orders on the account that the gateway did not place: "report" them, or also "cancel" them
    foreign_orders: str = "report"
    # Prometheus /metrics (host:port; "" serves none) and the OTLP endpoint for traces ("" exports none)
    metrics_addr: str = ""
    otlp_endpoint: str = ""
    # TRADING_TLS_DIR, TRADING_ALLOW_PLAINTEXT and its internal (mutual TLS) port (shared.tls)
    tls: TlsSettings = PLAINTEXT
    # The user service, whose audit trail takes the gateway's security events (foreign orders, 429/418);
    # "" sends none (they are still logged).
    user_service_addr: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from environment variables."""
        env = os.environ if env is None else env
        binance_env = env_str(env, "BINANCE_ENV", "sim").strip().lower()
        base_default, ws_default = default_urls(binance_env, env_int(env, "SIM_PORT", DEFAULT_SIM_PORT))
        base_url = env_str(env, "BINANCE_BASE_URL", base_default)
        private_key_file = env_str(env, "BINANCE_PRIVATE_KEY_FILE", "")
        passphrase = env_secret(env, "BINANCE_PRIVATE_KEY_PASSPHRASE", "")
        if private_key_file and env.get("BINANCE_API_SECRET"):
            raise ConfigError(
                "set BINANCE_API_SECRET (an HMAC key) or BINANCE_PRIVATE_KEY_FILE (an Ed25519 or RSA key), not both"
            )
        if passphrase and not private_key_file:
            raise ConfigError("BINANCE_PRIVATE_KEY_PASSPHRASE is set but BINANCE_PRIVATE_KEY_FILE is not")
        if binance_env == "sim" and not private_key_file:
            api_key = env_secret(env, "BINANCE_API_KEY", SIM_DEV_API_KEY)
            api_secret = env_secret(env, "BINANCE_API_SECRET", SIM_DEV_API_SECRET)
        elif private_key_file:
            if not env.get("BINANCE_API_KEY"):
                raise ConfigError(
                    "BINANCE_API_KEY is required with BINANCE_PRIVATE_KEY_FILE (the API key registered for that key)"
                )
            api_key = env_secret(env, "BINANCE_API_KEY")
            api_secret = ""
        else:
            if not env.get("BINANCE_API_KEY") or not env.get("BINANCE_API_SECRET"):
                where = "https://testnet.binance.vision" if binance_env == "testnet" else "Binance API Management"
                raise ConfigError(
                    f"BINANCE_API_KEY and BINANCE_PRIVATE_KEY_FILE (Ed25519 or RSA, recommended) or BINANCE_API_SECRET "
                    f"(HMAC) are required when BINANCE_ENV={binance_env} (create a key at {where}; keys are read "
                    "from the environment only)"
                )
            api_key = env_secret(env, "BINANCE_API_KEY")
            api_secret = env_secret(env, "BINANCE_API_SECRET")
        return cls(
            listen_addr=env_str(env, "EXCHANGE_GATEWAY_ADDR", DEFAULT_EXCHANGE_GATEWAY_ADDR),
            db_url=sqlite_url(env, "GATEWAY_DB_URL", "exchange_gateway.db"),
            binance_env=binance_env,
            base_url=base_url,
            stream_url=env_str(env, "BINANCE_STREAM_URL", default_stream_url(binance_env, base_url)),
            ws_api_url=env_str(env, "BINANCE_WS_API_URL", ws_default),
            api_key=api_key,
            api_secret=api_secret,
            private_key_file=private_key_file,
            private_key_passphrase=passphrase,
            service_token=env_secret(env, "TRADING_SERVICE_TOKEN"),
            admin_token=env_secret(env, "TRADING_ADMIN_TOKEN"),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
            recv_window_ms=env_int(env, "BINANCE_RECV_WINDOW_MS", 5000),
            request_timeout_s=env_float(env, "BINANCE_REQUEST_TIMEOUT_S", 10.0),
            rate_limit_margin=env_float(env, "GATEWAY_RATE_LIMIT_MARGIN", 0.02),
            window_guard_ms=env_float(env, "GATEWAY_WINDOW_GUARD_MS", 100.0),
            reconcile_interval_s=env_float(env, "GATEWAY_RECONCILE_INTERVAL_S", 60.0),
            exchange_info_interval_s=env_float(env, "GATEWAY_EXCHANGE_INFO_INTERVAL_S", 600.0),
            price_ttl_ms=env_int(env, "GATEWAY_PRICE_TTL_MS", 1000),
            market_data_ttl_ms=env_int(env, "GATEWAY_MARKET_DATA_TTL_MS", 1000),
            market_data_idle_s=env_float(env, "GATEWAY_MARKET_DATA_IDLE_S", 300.0),
            startup_timeout_s=env_float(env, "GATEWAY_STARTUP_TIMEOUT_S", 30.0),
            db_synchronous=env_sqlite_synchronous(env, "GATEWAY_DB_SYNCHRONOUS"),
            foreign_orders=_foreign_order_policy(env_str(env, "GATEWAY_FOREIGN_ORDERS", "report")),
            metrics_addr=metrics_addr(env, "GATEWAY_METRICS_ADDR"),
            otlp_endpoint=env_str(env, "OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            tls=TlsSettings.from_env(env),
            # Set but empty: none sent (a harness that starts the gateway before the user service, on port 0).
            user_service_addr=env.get("USER_SERVICE_ADDR", DEFAULT_USER_SERVICE_ADDR).strip(),
        )

    def validate(self) -> None:
        """Raise ConfigError for values the gateway cannot run with."""
        if self.binance_env not in ENVIRONMENTS:
            raise ConfigError(f"binance_env must be one of {', '.join(ENVIRONMENTS)}, got {self.binance_env!r}")
        if not self.service_token or not self.admin_token:
            raise ConfigError("TRADING_SERVICE_TOKEN and TRADING_ADMIN_TOKEN are required")
        if not self.api_key:
            raise ConfigError("BINANCE_API_KEY is required")
        if self.api_secret and self.private_key_file:
            raise ConfigError(
                "set BINANCE_API_SECRET (an HMAC key) or BINANCE_PRIVATE_KEY_FILE (an Ed25519 or RSA key), not both"
            )
        if not self.api_secret and not self.private_key_file:
            raise ConfigError("BINANCE_API_SECRET (HMAC) or BINANCE_PRIVATE_KEY_FILE (Ed25519 or RSA) is required")
        if self.private_key_passphrase and not self.private_key_file:
            raise ConfigError("BINANCE_PRIVATE_KEY_PASSPHRASE is set but BINANCE_PRIVATE_KEY_FILE is not")
        if not 0 < self.recv_window_ms <= 60_000:
            raise ConfigError("recvWindow must be between 1 and 60000 ms")
        if self.market_data_ttl_ms < 1:
            raise ConfigError("GATEWAY_MARKET_DATA_TTL_MS must be at least 1")
        if self.foreign_orders not in FOREIGN_ORDER_POLICIES:
            raise ConfigError(f"GATEWAY_FOREIGN_ORDERS must be report or cancel, got {self.foreign_orders!r}")


def _foreign_order_policy(value: str) -> str:
    """GATEWAY_FOREIGN_ORDERS: ``report`` or ``cancel`` (any case)."""
    policy = value.strip().lower()
    if policy not in FOREIGN_ORDER_POLICIES:
        raise ConfigError(f"GATEWAY_FOREIGN_ORDERS must be report or cancel, got {value!r}")
    return policy
