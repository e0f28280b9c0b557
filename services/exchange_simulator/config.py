"""The simulator's configuration: one frozen dataclass, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from services.exchange_simulator.matching import COMMISSION_ASSETS, COMMISSION_RATE
from shared.config import (
    DEFAULT_SIM_PORT,
    SIM_DEV_API_KEY,
    SIM_DEV_API_SECRET,
    ConfigError,
    env_bool,
    env_int,
    env_secret,
    env_str,
)

DEFAULT_BALANCES_TEXT = "USDT=10000000,BTC=1000,ETH=10000,BNB=100000"

DEV_KEYS_DIR = Path(__file__).resolve().parent / "dev_keys"
SIM_DEV_ED25519_API_KEY = "simDevEd25519ApiKey000000000000000000000000000000000000000000000"
"""API key of the development Ed25519 pair in ``dev_keys/`` (not a secret: the simulator is local)."""
SIM_DEV_ED25519_PUBLIC_KEY_FILE = str(DEV_KEYS_DIR / "ed25519-dev-public-key.pem")


# Binance's published limits (exchangeInfo.rateLimits, 2026).
DEFAULT_WEIGHT_PER_MINUTE = 6000
DEFAULT_ORDERS_PER_10S = 50
DEFAULT_ORDERS_PER_DAY = 160_000
DEFAULT_RAW_REQUESTS_PER_5M = 300_000
DEFAULT_BAN_BASE_SECONDS = 120
"""A first ban lasts 2 minutes; each further one doubles, up to 3 days (Binance: "from 2 minutes to 3 days")."""


def parse_balances(text: str) -> dict[str, Decimal]:
    """Parse ``"USDT=10000000,BTC=1000"`` into exact balances."""
    balances: dict[str, Decimal] = {}
    for raw_item in text.split(","):
        item = raw_item.strip()
        if not item:
            continue
        asset, sep, amount = item.partition("=")
        asset = asset.strip().upper()
        if not sep or not asset:
            raise ConfigError(f"SIM_BALANCES entry {item!r} must look like ASSET=AMOUNT")
        try:
            value = Decimal(amount.strip())
        except InvalidOperation:
            raise ConfigError(f"SIM_BALANCES amount for {asset} is not a number: {amount!r}") from None
        if not value.is_finite() or value < 0:
            raise ConfigError(f"SIM_BALANCES amount for {asset} must be a non-negative number")
        balances[asset] = value
    return balances


def parse_commission_rate(text: str, name: str = "SIM_COMMISSION_RATE") -> Decimal:
    """A commission rate: a decimal at least 0 and below 1 (``0.001`` is 0.1 %)."""
    try:
        rate = Decimal(text.strip())
    except InvalidOperation:
        raise ConfigError(f"{name} must be a decimal number, got {text!r}") from None
    if not rate.is_finite() or not 0 <= rate < 1:
        raise ConfigError(f"{name} must be at least 0 and below 1, got {text!r}")
    return rate


def _default_balances() -> dict[str, Decimal]:
    return parse_balances(DEFAULT_BALANCES_TEXT)


@dataclass(frozen=True)
class SimConfig:
    """Everything the simulator needs; tests build it directly, ``from_env`` reads the process environment."""

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str = SIM_DEV_API_KEY
    api_secret: str = SIM_DEV_API_SECRET
    # An Ed25519 or RSA public key (PEM) accepted for ``public_key_api_key``, beside the HMAC pair; "" for none.
    public_key_api_key: str = SIM_DEV_ED25519_API_KEY
    public_key_file: str = SIM_DEV_ED25519_PUBLIC_KEY_FILE
    # Commission: "" charges it in the asset received, "BNB" in BNB (Binance's "pay fees with BNB").
    commission_asset: str = ""
    commission_rate: Decimal = COMMISSION_RATE
    random_walk: bool = False
    balances: dict[str, Decimal] = field(default_factory=_default_balances)
    random_walk_interval_ms: int = 500
    random_walk_step_bps: Decimal = Decimal(5)
    random_walk_seed: int | None = None
    # Rate limits (defaults are Binance's); /sim/v1/limits changes them at run time.
    weight_per_minute: int = DEFAULT_WEIGHT_PER_MINUTE
    orders_per_10s: int = DEFAULT_ORDERS_PER_10S
    orders_per_day: int = DEFAULT_ORDERS_PER_DAY
    raw_requests_per_5m: int = DEFAULT_RAW_REQUESTS_PER_5M
    ban_base_seconds: int = DEFAULT_BAN_BASE_SECONDS
    # WebSocket API
    ws_ping_interval_s: float = 20.0
    ws_pong_timeout_s: float = 60.0
    ws_connections_per_5m: int = 300
    # False skips the timestamp/recvWindow check (only to replay Binance's 2017 test vectors).
    verify_timestamps: bool = True
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SimConfig:
        """Read SIM_HOST, SIM_PORT, BINANCE_API_KEY/SECRET, SIM_PUBLIC_KEY_FILE/_API_KEY, SIM_COMMISSION_ASSET/_RATE,
        SIM_RANDOM_WALK, SIM_BALANCES and LOG_LEVEL."""
        env = os.environ if env is None else env
        port = env_int(env, "SIM_PORT", DEFAULT_SIM_PORT)
        if not 0 <= port <= 65535:
            raise ConfigError(f"SIM_PORT must be between 0 and 65535, got {port}")
        # `make run` gives the simulator the gateway's environment: with BINANCE_PRIVATE_KEY_FILE set there,
        # BINANCE_API_KEY names the gateway's Ed25519/RSA key, so it is the public key's API key here.
        asymmetric = bool(env.get("BINANCE_PRIVATE_KEY_FILE"))
        hmac_api_key = SIM_DEV_API_KEY if asymmetric else env_str(env, "BINANCE_API_KEY", SIM_DEV_API_KEY)
        public_key_api_key = env_str(
            env,
            "SIM_PUBLIC_KEY_API_KEY",
            env_str(env, "BINANCE_API_KEY", SIM_DEV_ED25519_API_KEY) if asymmetric else SIM_DEV_ED25519_API_KEY,
        )
        commission_asset = env.get("SIM_COMMISSION_ASSET", "").strip().upper()
        if commission_asset not in COMMISSION_ASSETS:
            raise ConfigError(f"SIM_COMMISSION_ASSET must be empty or BNB, got {commission_asset!r}")
        return cls(
            host=env_str(env, "SIM_HOST", "127.0.0.1"),
            port=port,
            api_key=hmac_api_key,
            api_secret=env_secret(env, "BINANCE_API_SECRET", SIM_DEV_API_SECRET),
            public_key_api_key=public_key_api_key,
            public_key_file=env_str(env, "SIM_PUBLIC_KEY_FILE", SIM_DEV_ED25519_PUBLIC_KEY_FILE),
            commission_asset=commission_asset,
            commission_rate=parse_commission_rate(env.get("SIM_COMMISSION_RATE", "") or str(COMMISSION_RATE)),
            random_walk=env_bool(env, "SIM_RANDOM_WALK", False),
            balances=parse_balances(env_str(env, "SIM_BALANCES", DEFAULT_BALANCES_TEXT)),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
        )
