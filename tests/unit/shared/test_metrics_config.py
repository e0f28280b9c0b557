"""Where each service serves /metrics: the default, turned off by an empty value, a malformed value refused."""

import grpc
import pytest

from shared.config import ConfigError
from shared.metrics import DEFAULT_METRICS_ADDRS, _go_name, metrics_addr


def test_an_unset_variable_gives_the_services_default_address():
    assert metrics_addr({}, "ORDER_METRICS_ADDR") == "127.0.0.1:9101"
    assert DEFAULT_METRICS_ADDRS == {
        "ORDER_METRICS_ADDR": "127.0.0.1:9101",
        "USER_METRICS_ADDR": "127.0.0.1:9102",
        "GATEWAY_METRICS_ADDR": "127.0.0.1:9103",
    }


def test_an_empty_variable_turns_metrics_off():
    assert metrics_addr({"USER_METRICS_ADDR": ""}, "USER_METRICS_ADDR") == ""
    assert metrics_addr({"USER_METRICS_ADDR": "  "}, "USER_METRICS_ADDR") == ""


def test_an_address_is_kept_as_given():
    assert metrics_addr({"GATEWAY_METRICS_ADDR": "0.0.0.0:9300"}, "GATEWAY_METRICS_ADDR") == "0.0.0.0:9300"


@pytest.mark.parametrize("value", ["9101", "localhost", "127.0.0.1:port", "127.0.0.1:70000"])
def test_a_malformed_address_is_refused_naming_the_variable(value):
    with pytest.raises(ConfigError, match="ORDER_METRICS_ADDR"):
        metrics_addr({"ORDER_METRICS_ADDR": value}, "ORDER_METRICS_ADDR")


def test_status_codes_are_labelled_as_grpc_go_spells_them():
    assert _go_name(grpc.StatusCode.OK) == "OK"
    assert _go_name(grpc.StatusCode.CANCELLED) == "Canceled"
    assert _go_name(grpc.StatusCode.INVALID_ARGUMENT) == "InvalidArgument"
    assert _go_name(grpc.StatusCode.RESOURCE_EXHAUSTED) == "ResourceExhausted"
