"""shared.config.env_sqlite_synchronous, and the two services that read their SQLite setting with it."""

import pytest

from services.exchange_gateway.config import Config as GatewayConfig
from services.order_service.config import Config as OrderConfig
from shared.config import ConfigError, env_sqlite_synchronous

TOKENS = {"TRADING_ADMIN_TOKEN": "admin-token-for-tests", "TRADING_SERVICE_TOKEN": "service-token-for-tests"}


@pytest.mark.parametrize(("raw", "expected"), [("normal", "NORMAL"), ("FULL", "FULL"), ("Extra", "EXTRA")])
def test_the_setting_is_read_in_any_case(raw, expected):
    assert env_sqlite_synchronous({"X_SYNC": raw}, "X_SYNC") == expected


def test_unset_or_empty_is_the_default():
    assert env_sqlite_synchronous({}, "X_SYNC") == "FULL"
    assert env_sqlite_synchronous({"X_SYNC": ""}, "X_SYNC", "NORMAL") == "NORMAL"


@pytest.mark.parametrize("raw", ["OFF", "0", "fast"])
def test_anything_else_is_refused_naming_the_variable(raw):
    with pytest.raises(ConfigError, match=r"X_SYNC must be FULL, NORMAL or EXTRA"):
        env_sqlite_synchronous({"X_SYNC": raw}, "X_SYNC")


@pytest.mark.parametrize(
    ("config", "name"), [(GatewayConfig, "GATEWAY_DB_SYNCHRONOUS"), (OrderConfig, "ORDER_DB_SYNCHRONOUS")]
)
def test_the_services_read_and_check_their_variable(config, name):
    assert config.from_env({**TOKENS, name: "normal"}).db_synchronous == "NORMAL"
    assert config.from_env(TOKENS).db_synchronous == "FULL"
    with pytest.raises(ConfigError, match=name):
        config.from_env({**TOKENS, name: "OFF"})
