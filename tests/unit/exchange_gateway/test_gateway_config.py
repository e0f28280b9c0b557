"""The gateway's configuration: the foreign-order policy."""

from __future__ import annotations

import pytest

from services.exchange_gateway.config import Config
from shared.config import ConfigError

TOKENS = {"TRADING_SERVICE_TOKEN": "svc-token-config-test", "TRADING_ADMIN_TOKEN": "adm-token-config-test"}


def test_foreign_orders_are_reported_unless_configured_otherwise():
    assert Config.from_env(TOKENS).foreign_orders == "report"
    assert Config.from_env({**TOKENS, "GATEWAY_FOREIGN_ORDERS": " Cancel "}).foreign_orders == "cancel"


def test_an_unknown_foreign_order_policy_is_a_config_error_naming_the_variable():
    with pytest.raises(ConfigError, match="GATEWAY_FOREIGN_ORDERS") as caught:
        Config.from_env({**TOKENS, "GATEWAY_FOREIGN_ORDERS": "bogus"})
    assert "bogus" in str(caught.value)
    with pytest.raises(ConfigError, match="GATEWAY_FOREIGN_ORDERS"):
        Config(service_token="s" * 8, admin_token="a" * 8, foreign_orders="bogus").validate()
