"""Over HTTP and the WebSocket API: commission in BNB everywhere Binance shows it, the account's free and locked
balances through a resting order and its fill, /sim/v1/commission, and ids that a restart or reset never reuses."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from services.exchange_simulator import RunningSimulator, SimConfig, start_simulator
from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET
from tests.integration.exchange_simulator.conftest import SignedClient, limit_order
from tests.integration.exchange_simulator.test_ws_api import Stream, subscribe_params


async def balances(client: SignedClient) -> dict[str, tuple[str, str]]:
    status, account, _ = await client.call("GET", "/api/v3/account")
    assert status == 200, account
    return {b["asset"]: (b["free"], b["locked"]) for b in account["balances"]}


async def subscribe(session: aiohttp.ClientSession, sim: RunningSimulator) -> Stream:
    stream = Stream(await session.ws_connect(sim.ws_api_url))
    answer = await stream.request("sub", "userDataStream.subscribe.signature", subscribe_params())
    assert answer["status"] == 200, answer
    return stream


# ------------------------------------------------------------------------------------------ /sim/v1/commission


async def test_commission_endpoint_answers_the_settings_and_stats_show_them(client: SignedClient) -> None:
    assert await client.control("commission", {"asset": "BNB"}) == {"asset": "BNB", "rate": "0.00100000"}
    assert await client.control("commission", {"asset": "BNB", "rate": "0.00075"}) == {
        "asset": "BNB",
        "rate": "0.00075000",
    }
    assert (await client.control("stats"))["commission"] == {"asset": "BNB", "rate": "0.00075000"}
    assert await client.control("commission", {"asset": ""}) == {"asset": "", "rate": "0.00075000"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "asset must be"),
        ({"asset": "ETH"}, "asset must be"),
        ({"asset": None}, "asset must be"),
        ({"asset": "BNB", "rate": "-0.001"}, "rate must be non-negative"),
        ({"asset": "BNB", "rate": "1"}, "rate must be below 1"),
        ({"asset": "BNB", "rate": "lots"}, "rate must be a decimal number"),
        ({"asset": "BNB", "discount": "0.25"}, "unknown commission settings: discount"),
    ],
)
async def test_commission_endpoint_refuses_bad_input_with_400(
    client: SignedClient, body: dict[str, Any], message: str
) -> None:
    async with client.session.post(f"{client.base_url}/sim/v1/commission", json=body) as response:
        assert response.status == 400
        assert message in (await response.json())["error"]
    assert (await client.control("stats"))["commission"] == {"asset": "", "rate": "0.00100000"}


async def test_reset_restores_the_configured_commission(client: SignedClient, session: aiohttp.ClientSession) -> None:
    await client.control("commission", {"asset": "BNB", "rate": "0.002"})
    await client.control("reset", {})
    assert (await client.control("stats"))["commission"] == {"asset": "", "rate": "0.00100000"}

    configured = await start_simulator(SimConfig(port=0, commission_asset="BNB", commission_rate=Decimal("0.00075")))
    try:
        other = SignedClient(session, configured.base_url, SIM_DEV_API_KEY, SIM_DEV_API_SECRET)
        await other.control("commission", {"asset": ""})
        await other.control("reset", {})
        assert (await other.control("stats"))["commission"] == {"asset": "BNB", "rate": "0.00075000"}
    finally:
        await configured.stop()


# ------------------------------------------------------------------------------------------ the account


@pytest.mark.parametrize("bnb_fees", [False, True], ids=["fee-in-asset-received", "fee-in-bnb"])
async def test_account_free_and_locked_follow_a_resting_order_and_its_fill(
    client: SignedClient, sim: RunningSimulator, session: aiohttp.ClientSession, bnb_fees: bool
) -> None:
    if bnb_fees:
        await client.control("commission", {"asset": "BNB"})
    stream = await subscribe(session, sim)
    before = await balances(client)
    assert before["USDT"] == ("10000000.00000000", "0.00000000")
    assert before["BNB"] == ("100000.00000000", "0.00000000")

    status, placed, _ = await client.call("POST", "/api/v3/order", limit_order(quantity="0.10000", price="49000.00"))
    assert (status, placed["status"], placed["fills"]) == (200, "NEW", [])
    resting = await balances(client)
    assert resting["USDT"] == ("9995100.00000000", "4900.00000000")
    assert resting["BTC"] == ("1000.00000000", "0.00000000")

    await client.control("price", {"symbol": "BTCUSDT", "price": "48990.00"})
    report = await stream.execution()
    while report["x"] != "TRADE":
        report = await stream.execution()
    filled = await balances(client)
    assert filled["USDT"] == ("9995100.00000000", "0.00000000")
    _, trades, _ = await client.call("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "orderId": placed["orderId"]})
    [trade] = trades
    if bnb_fees:
        # 4900 USDT x 0.001 = 4.9 USDT = 0.00816667 BNB at 600.
        assert (report["n"], report["N"]) == ("0.00816667", "BNB")
        assert (trade["commission"], trade["commissionAsset"]) == ("0.00816667", "BNB")
        assert filled["BTC"] == ("1000.10000000", "0.00000000")
        assert filled["BNB"] == ("99999.99183333", "0.00000000")
    else:
        assert (report["n"], report["N"]) == ("0.00010000", "BTC")
        assert (trade["commission"], trade["commissionAsset"]) == ("0.00010000", "BTC")
        assert filled["BTC"] == ("1000.09990000", "0.00000000")
        assert filled["BNB"] == ("100000.00000000", "0.00000000")
    await stream.ws.close()


async def test_bnb_commission_shows_in_full_fills_my_trades_and_the_execution_report(
    client: SignedClient, sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    await client.control("commission", {"asset": "BNB"})
    stream = await subscribe(session, sim)
    status, placed, _ = await client.call(
        "POST", "/api/v3/order", {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "2"}
    )
    assert status == 200, placed
    # 2 ETH at 3000 = 6000 USDT; 0.1 % = 6 USDT = 0.01 BNB at 600.
    [fill] = placed["fills"]
    assert (fill["commission"], fill["commissionAsset"]) == ("0.01000000", "BNB")
    _, trades, _ = await client.call("GET", "/api/v3/myTrades", {"symbol": "ETHUSDT"})
    assert [(t["id"], t["commission"], t["commissionAsset"]) for t in trades] == [
        (fill["tradeId"], "0.01000000", "BNB")
    ]
    report = await stream.execution()
    while report["x"] != "TRADE":
        report = await stream.execution()
    assert (report["t"], report["n"], report["N"]) == (fill["tradeId"], "0.01000000", "BNB")
    position = await stream.position()
    assert {"a": "BNB", "f": "99999.99000000", "l": "0.00000000"} in position["B"]
    account = await balances(client)
    assert account["USDT"] == ("10006000.00000000", "0.00000000")
    assert account["BNB"] == ("99999.99000000", "0.00000000")

    _, test_order, _ = await client.call(
        "POST",
        "/api/v3/order/test",
        {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "2", "computeCommissionRates": "true"},
    )
    assert test_order["discount"]["enabledForAccount"] is True
    await stream.ws.close()


async def test_account_shows_the_commission_rate(client: SignedClient) -> None:
    await client.control("commission", {"asset": "", "rate": "0.002"})
    _, account, _ = await client.call("GET", "/api/v3/account")
    assert (account["makerCommission"], account["takerCommission"]) == (20, 20)
    assert account["commissionRates"]["taker"] == "0.00200000"
    _, placed, _ = await client.call(
        "POST", "/api/v3/order", {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "1"}
    )
    assert [(f["commission"], f["commissionAsset"]) for f in placed["fills"]] == [("6.00000000", "USDT")]


# ------------------------------------------------------------------------------------------ ids


async def test_ids_start_from_the_clock_and_a_restarted_simulator_never_reuses_them(
    session: aiohttp.ClientSession,
) -> None:
    started_ms = int(time.time() * 1000)
    seen: list[tuple[int, int]] = []
    for _ in range(2):  # the second simulator is a restart: a fresh exchange in memory
        running = await start_simulator(SimConfig(port=0))
        try:
            client = SignedClient(session, running.base_url, SIM_DEV_API_KEY, SIM_DEV_API_SECRET)
            status, placed, _ = await client.call(
                "POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"}
            )
            assert status == 200, placed
            seen.append((placed["orderId"], placed["fills"][0]["tradeId"]))
        finally:
            await running.stop()
    (first_order, first_trade), (second_order, second_trade) = seen
    assert first_order >= started_ms * 1000 and first_trade >= started_ms * 1000
    assert second_order > first_order and second_trade > first_trade


async def test_reset_keeps_ids_increasing_unless_it_is_given_next_ids(client: SignedClient) -> None:
    market_buy = {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"}
    _, first, _ = await client.call("POST", "/api/v3/order", market_buy)
    await client.control("reset", {})
    _, second, _ = await client.call("POST", "/api/v3/order", market_buy)
    assert second["orderId"] > first["orderId"]
    assert second["fills"][0]["tradeId"] > first["fills"][0]["tradeId"]

    await client.control("reset", {"next_order_id": 1, "next_trade_id": 1})
    _, forgetful, _ = await client.call("POST", "/api/v3/order", market_buy)
    assert (forgetful["orderId"], forgetful["fills"][0]["tradeId"]) == (1, 1)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"next_order_id": 0}, "next_order_id must be at least 1"),
        ({"next_trade_id": "x"}, "next_trade_id must be an integer"),
        ({"next_trade_id": 1.5}, "next_trade_id must be an integer"),
        ({"next_order_id": 2**63}, "next_order_id must be at most"),
    ],
)
async def test_reset_refuses_bad_next_ids_with_400(client: SignedClient, body: dict[str, Any], message: str) -> None:
    async with client.session.post(f"{client.base_url}/sim/v1/reset", json=body) as response:
        assert response.status == 400
        assert message in (await response.json())["error"]
