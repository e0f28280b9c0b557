"""Reading configuration from the environment, in one place per service.

Each service has a frozen dataclass built by its ``bootstrap`` from ``os.environ``; these helpers
keep the parsing and error messages consistent. Tests build the dataclasses directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from shared.logs import register_secret

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VAR_DIR = REPO_ROOT / "var"

DEFAULT_ORDER_SERVICE_ADDR = "127.0.0.1:50051"
DEFAULT_USER_SERVICE_ADDR = "127.0.0.1:50052"
DEFAULT_EXCHANGE_GATEWAY_ADDR = "127.0.0.1:50053"
DEFAULT_SIM_PORT = 8765


class ConfigError(Exception):
    """A configuration value is missing or malformed."""


def env_str(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """Return a variable, or ``default``; raise ConfigError if neither exists."""
    value = env.get(name, "")
    if value == "":
        if default is None:
            raise ConfigError(f"environment variable {name} is required")
        return default
    return value


SQLITE_SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA")


def env_sqlite_synchronous(env: Mapping[str, str], name: str, default: str = "FULL") -> str:
    """SQLite's ``synchronous`` setting from variable ``name`` (any case): FULL, NORMAL or EXTRA."""
    value = env_str(env, name, default).upper()
    if value not in SQLITE_SYNCHRONOUS:
        raise ConfigError(f"{name} must be FULL, NORMAL or EXTRA, got {value!r}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    """Return an integer variable or ``default``."""
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {raw!r}") from None


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    """Return a float variable or ``default``."""
    raw = env.get(name, "")
    if raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be a number, got {raw!r}") from None


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Return a boolean variable (1/true/yes/on) or ``default``."""
    raw = env.get(name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"environment variable {name} must be true or false, got {raw!r}")


def env_secret(env: Mapping[str, str], name: str, default: str | None = None) -> str:
    """Return a secret variable and register it for masking in every log line."""
    value = env_str(env, name, default)
    register_secret(value)
    return value


def sqlite_url(env: Mapping[str, str], name: str, filename: str) -> str:
    """Return the database URL from ``name``, defaulting to a SQLite file under ``var/``."""
    return env_str(env, name, f"sqlite:///{DEFAULT_VAR_DIR / filename}")


# Development key pair of the embedded exchange simulator (BINANCE_ENV=sim). Not secrets: the
# simulator is local. `make run` passes the same pair to the simulator and the gateway; set
# BINANCE_API_KEY / BINANCE_API_SECRET to use another pair.
SIM_DEV_API_KEY = "simDevApiKey0000000000000000000000000000000000000000000000000000"
SIM_DEV_API_SECRET = "simDevApiSecret000000000000000000000000000000000000000000000000"  # noqa: S105
