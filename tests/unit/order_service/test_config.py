"""The order service's configuration: the in-flight limit that sheds load."""

from __future__ import annotations

import pytest

from services.order_service.config import Config
from shared.config import ConfigError

TOKENS = {"TRADING_SERVICE_TOKEN": "service-secret-456"}


def test_the_in_flight_limit_defaults_to_1000_and_0_turns_it_off() -> None:
    assert Config.from_env(TOKENS).max_in_flight == 1000
    assert Config.from_env({**TOKENS, "ORDER_MAX_IN_FLIGHT": "0"}).max_in_flight == 0
    assert Config.from_env({**TOKENS, "ORDER_MAX_IN_FLIGHT": "300"}).max_in_flight == 300


@pytest.mark.parametrize("value", ["-1", "many"])
def test_a_bad_in_flight_limit_names_the_variable(value: str) -> None:
    with pytest.raises(ConfigError, match="ORDER_MAX_IN_FLIGHT"):
        Config.from_env({**TOKENS, "ORDER_MAX_IN_FLIGHT": value})
