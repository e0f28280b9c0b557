"""Configuration of the user service, read from the environment in one place."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.config import DEFAULT_USER_SERVICE_ADDR, env_str


@dataclass(frozen=True)
class Config:
    """Everything the service needs from its environment."""

    listen_addr: str = DEFAULT_USER_SERVICE_ADDR
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Build the configuration from environment variables."""
        env = os.environ if env is None else env
        return cls(
            listen_addr=env_str(env, "USER_SERVICE_ADDR", DEFAULT_USER_SERVICE_ADDR),
            log_level=env_str(env, "LOG_LEVEL", "INFO"),
        )
