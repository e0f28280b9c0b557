"""The services' configurations for a stack started in the test's own process.

Every service listens on 127.0.0.1 port 0, keeps its database in a SQLite file in the test's
``tmp_path`` and logs warnings only; a test names what it sets differently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.exchange_gateway.config import Config as GatewayConfig
from services.exchange_simulator.app import RunningSimulator


def gateway_config(
    tmp_path: Path, sim: RunningSimulator, *, service_token: str, admin_token: str, **fields: Any
) -> GatewayConfig:
    """A gateway trading on the in-process simulator ``sim``."""
    return GatewayConfig(
        listen_addr="127.0.0.1:0",
        db_url=f"sqlite:///{tmp_path / 'gateway.db'}",
        binance_env="sim",
        base_url=sim.base_url,
        ws_api_url=sim.ws_api_url,
        service_token=service_token,
        admin_token=admin_token,
        log_level="WARNING",
        db_synchronous="NORMAL",
        **fields,
    )
