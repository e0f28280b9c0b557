"""python-binance (PyPI, not ours), pointed at the simulator, trades unchanged: proof the wire format is Binance's.

Only the base URL changes (``API_URL``, exactly as one would point it at another Binance host); its signing,
parameter order, timestamps and response handling are its own.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from binance.client import Client
from binance.exceptions import BinanceAPIException

from services.exchange_simulator import RunningSimulator
from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET


def binance_client(sim: RunningSimulator) -> Client:
    client = Client(SIM_DEV_API_KEY, SIM_DEV_API_SECRET, ping=False)
    client.API_URL = f"{sim.base_url}/api"
    return client


def limit_order_round_trip(client: Client) -> dict[str, Any]:
    client.ping()
    server_time = client.get_server_time()["serverTime"]
    info = client.get_symbol_info("BTCUSDT")
    placed = client.order_limit_buy(symbol="BTCUSDT", quantity="0.01000", price="49000.00", newClientOrderId="pb-1")
    queried = client.get_order(symbol="BTCUSDT", orderId=placed["orderId"])
    by_client_id = client.get_order(symbol="BTCUSDT", origClientOrderId="pb-1")
    opened = client.get_open_orders(symbol="BTCUSDT")
    cancelled = client.cancel_order(symbol="BTCUSDT", orderId=placed["orderId"])
    after = client.get_order(symbol="BTCUSDT", orderId=placed["orderId"])
    market = client.order_market_sell(symbol="BTCUSDT", quantity="0.02000")
    trades = client.get_my_trades(symbol="BTCUSDT")
    account = client.get_account()
    balance = client.get_asset_balance(asset="BTC")
    try:
        client.get_order(symbol="BTCUSDT", orderId=987654)
        missing: Any = None
    except BinanceAPIException as error:
        missing = (error.status_code, error.code, error.message)
    return {
        "server_time": server_time,
        "info": info,
        "placed": placed,
        "queried": queried,
        "by_client_id": by_client_id,
        "opened": opened,
        "cancelled": cancelled,
        "after": after,
        "market": market,
        "trades": trades,
        "account": account,
        "balance": balance,
        "missing": missing,
    }


async def test_python_binance_places_queries_cancels_and_reads_the_account(sim: RunningSimulator) -> None:
    r = await asyncio.to_thread(limit_order_round_trip, binance_client(sim))

    assert r["server_time"] > 0
    assert r["info"]["symbol"] == "BTCUSDT"
    assert r["placed"]["status"] == "NEW" and r["placed"]["clientOrderId"] == "pb-1"
    assert r["queried"] == r["by_client_id"]
    assert r["queried"]["price"] == "49000.00000000"
    assert [o["orderId"] for o in r["opened"]] == [r["placed"]["orderId"]]
    assert r["cancelled"]["status"] == "CANCELED"
    assert r["after"]["status"] == "CANCELED"
    assert r["market"]["status"] == "FILLED"
    assert r["market"]["fills"][0]["price"] == "50000.00000000"
    assert [t["orderId"] for t in r["trades"]] == [r["market"]["orderId"]]
    balances = {b["asset"]: b for b in r["account"]["balances"]}
    assert balances["USDT"]["free"] == "10000999.00000000"  # 1000 USDT received minus 0.1 %
    assert Decimal(r["balance"]["free"]) == Decimal("999.98")
    assert r["missing"] == (400, -2013, "Order does not exist.")
    assert sim.exchange.open_order_count() == 0


def rejected_order(client: Client) -> tuple[int, int, str]:
    try:
        client.order_limit_buy(symbol="BTCUSDT", quantity="0.01000", price="49000.001")
    except BinanceAPIException as error:
        return error.status_code, error.code, error.message
    raise AssertionError("the order was accepted")


async def test_python_binance_sees_binance_errors(sim: RunningSimulator) -> None:
    assert await asyncio.to_thread(rejected_order, binance_client(sim)) == (400, -1013, "Filter failure: PRICE_FILTER")


@pytest.mark.parametrize("secret", ["wrong-secret"])
async def test_python_binance_with_a_wrong_secret_gets_1022(sim: RunningSimulator, secret: str) -> None:
    client = Client(SIM_DEV_API_KEY, secret, ping=False)
    client.API_URL = f"{sim.base_url}/api"

    def call() -> int:
        try:
            client.get_account()
        except BinanceAPIException as error:
            return error.code
        return 0

    assert await asyncio.to_thread(call) == -1022
