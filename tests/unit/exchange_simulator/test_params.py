"""REST parameter handling: query over body, and Binance's -11xx answers for malformed orders."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.exchange_simulator.config import SimConfig, parse_balances
from services.exchange_simulator.errors import BinanceError
from services.exchange_simulator.rest import parse_new_order, parse_params
from services.exchange_simulator.simulator import Simulator


def test_query_wins_over_body_and_duplicates_are_rejected() -> None:
    assert parse_params("quantity=2&symbol=BTCUSDT", "quantity=1&price=3") == {
        "quantity": "2",
        "symbol": "BTCUSDT",
        "price": "3",
    }
    assert parse_params("symbol=%EF%BC%91", "") == {"symbol": "１"}
    with pytest.raises(BinanceError) as info:
        parse_params("a=1&a=2", "")
    assert info.value.code == -1101


BASE = {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "1", "price": "1"}


@pytest.mark.parametrize(
    ("changes", "code", "msg"),
    [
        ({"symbol": "LTCBTC"}, -1121, "Invalid symbol."),
        ({"symbol": ""}, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed."),
        ({"timeInForce": None}, -1102, "Mandatory parameter 'timeInForce' was not sent, was empty/null, or malformed."),
        ({"price": None}, -1102, "Mandatory parameter 'price' was not sent, was empty/null, or malformed."),
        ({"side": "HOLD"}, -1117, "Invalid side."),
        ({"type": "ICEBERG"}, -1116, "Invalid orderType."),
        ({"timeInForce": "GTX"}, -1115, "Invalid timeInForce."),
        ({"quantity": "0.123456789"}, -1111, "Parameter 'quantity' has too much precision."),
        (
            {"quantity": "1e-3"},
            -1100,
            "Illegal characters found in parameter 'quantity'; legal range is '^([0-9]{1,20})(\\.[0-9]{1,20})?$'.",
        ),
        (
            {"newClientOrderId": "has space"},
            -1100,
            "Illegal characters found in parameter 'newClientOrderId'; legal range is '^[a-zA-Z0-9-_]{1,36}$'.",
        ),
        ({"stopPrice": "1"}, -1106, "Parameter 'stopPrice' sent when not required."),
        (
            {"type": "MARKET", "timeInForce": None, "price": None, "quantity": None},
            -1102,
            "Param 'quantity' or 'quoteOrderQty' must be sent, but both were empty/null!",
        ),
        ({"type": "MARKET", "timeInForce": None}, -1106, "Parameter 'price' sent when not required."),
        ({"type": "STOP_LOSS", "timeInForce": None, "price": None}, -1102, None),
    ],
)
def test_malformed_new_orders_get_binance_codes(changes: dict[str, str | None], code: int, msg: str | None) -> None:
    sim = Simulator(SimConfig())
    params = {k: v for k, v in {**BASE, **changes}.items() if v is not None}
    with pytest.raises(BinanceError) as info:
        parse_new_order(sim, params)
    assert info.value.code == code
    if msg is not None:
        assert info.value.msg == msg


def test_balances_from_the_environment_format() -> None:
    assert parse_balances("USDT=10000000, btc=0.5") == {"USDT": Decimal(10000000), "BTC": Decimal("0.5")}
