"""Configuration from the environment: required tokens, defaults, refusals."""

from __future__ import annotations

import pytest

from services.user_service.config import Config
from shared.config import ConfigError
from shared.logs import mask

TOKENS = {"TRADING_ADMIN_TOKEN": "admin-secret-123", "TRADING_SERVICE_TOKEN": "service-secret-456"}


def test_defaults_and_masked_tokens() -> None:
    config = Config.from_env(TOKENS)
    assert config.listen_addr == "127.0.0.1:50052"
    assert config.db_url.startswith("sqlite:///") and config.db_url.endswith("var/user_service.db")
    assert config.db_synchronous == "FULL"
    assert config.exchange_gateway_addr == "127.0.0.1:50053"
    assert config.assets == (), "no USER_ASSETS: the asset list comes from the gateway"
    assert "admin-secret-123" not in repr(config)
    assert "admin-secret-123" not in mask("token is admin-secret-123")


def test_environment_overrides() -> None:
    config = Config.from_env(
        {**TOKENS, "USER_SERVICE_ADDR": "127.0.0.1:0", "USER_DB_URL": "sqlite:////tmp/x/u.db", "LOG_LEVEL": "DEBUG"}
    )
    assert (config.listen_addr, config.db_url, config.log_level) == ("127.0.0.1:0", "sqlite:////tmp/x/u.db", "DEBUG")


def test_user_assets_fix_the_list_and_the_gateway_address_is_read() -> None:
    config = Config.from_env({**TOKENS, "USER_ASSETS": "BTC, USDT,ETH,", "EXCHANGE_GATEWAY_ADDR": "10.0.0.5:6000"})
    assert config.assets == ("BTC", "USDT", "ETH")
    assert config.exchange_gateway_addr == "10.0.0.5:6000"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TRADING_SERVICE_TOKEN": "service-secret-456"}, "TRADING_ADMIN_TOKEN"),
        ({"TRADING_ADMIN_TOKEN": "admin-secret-123"}, "TRADING_SERVICE_TOKEN"),
        ({"TRADING_ADMIN_TOKEN": "same-secret-1", "TRADING_SERVICE_TOKEN": "same-secret-1"}, "must differ"),
        ({**TOKENS, "USER_DB_URL": "sqlite://"}, "USER_DB_URL must name a SQLite file"),
        ({**TOKENS, "USER_DB_URL": "sqlite:///:memory:"}, "USER_DB_URL must name a SQLite file"),
        ({**TOKENS, "USER_DB_URL": "mysql://x/y"}, "USER_DB_URL must be sqlite"),
        ({**TOKENS, "USER_DB_SYNCHRONOUS": "OFF"}, "USER_DB_SYNCHRONOUS"),
        ({**TOKENS, "USER_ASSETS": "BTC,usdt"}, "USER_ASSETS"),
        ({**TOKENS, "USER_ASSETS": "BTC;USDT"}, "USER_ASSETS"),
    ],
)
def test_refusals_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)
