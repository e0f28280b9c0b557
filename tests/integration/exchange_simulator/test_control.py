"""The /sim/v1 control endpoints: price and liquidity, reset, random walk, validation, stats and orders."""

from __future__ import annotations

import asyncio

from services.exchange_simulator import RunningSimulator
from tests.integration.exchange_simulator.conftest import SignedClient, limit_order


async def test_reset_restores_balances_prices_orders_and_limits(client: SignedClient, sim: RunningSimulator) -> None:
    await client.call("POST", "/api/v3/order", limit_order())
    await client.control("limits", {"weight_per_minute": 100})
    await client.control("faults", {"action": "http_503", "endpoint": "any", "count": 3})
    await client.control("reset", {"balances": {"USDT": "1000", "BTC": "0.5"}, "prices": {"BTCUSDT": "42000.50"}})

    _, account, _ = await client.call("GET", "/api/v3/account")
    assert {b["asset"]: b["free"] for b in account["balances"]} == {"USDT": "1000.00000000", "BTC": "0.50000000"}
    assert (await client.call("GET", "/api/v3/ticker/price", {"symbol": "BTCUSDT"}, signed=False))[1]["price"] == (
        "42000.50000000"
    )
    stats = await client.control("stats")
    assert stats["open_orders"] == 0 and stats["orders_accepted"] == 0 and stats["faults"] == []
    assert stats["limits"]["weight_per_minute"] == 6000
    assert await client.control("orders") == []

    await client.control("reset", {})
    assert sim.exchange.account.get("USDT").free == 10_000_000


async def test_limits_change_exchange_info_and_reset_restores_them(client: SignedClient) -> None:
    answer = await client.control("limits", {"orders_per_10s": 7, "max_num_orders": 1000, "max_num_algo_orders": 9})
    assert (answer["orders_per_10s"], answer["max_num_orders"], answer["max_num_algo_orders"]) == (7, 1000, 9)

    async def filters() -> tuple[int, int, list[object]]:
        _, info, _ = await client.call("GET", "/api/v3/exchangeInfo", {"symbol": "ETHUSDT"}, signed=False)
        by_type = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
        return (
            by_type["MAX_NUM_ORDERS"]["maxNumOrders"],
            by_type["MAX_NUM_ALGO_ORDERS"]["maxNumAlgoOrders"],
            info["rateLimits"],
        )

    max_orders, max_algo, rate_limits = await filters()
    assert (max_orders, max_algo) == (1000, 9)
    assert {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 7} in rate_limits
    async with client.session.post(f"{client.base_url}/sim/v1/limits", json={"max_num_order": 5}) as r:
        assert r.status == 400  # a misspelt limit is an error, not silently ignored
    await client.control("reset", {})
    assert (await filters())[:2] == (200, 5)


async def test_price_and_liquidity_controls(client: SignedClient) -> None:
    answer = await client.control("price", {"symbol": "BNBUSDT", "price": "612.34"})
    assert answer == {"symbol": "BNBUSDT", "price": "612.34000000", "trades": 0}
    answer = await client.control("liquidity", {"symbol": "BNBUSDT", "level_quantity": "10", "levels": 2})
    assert answer == {"symbol": "BNBUSDT", "level_quantity": "10.00000000", "levels": 2, "spread": "0.06000000"}
    _, depth, _ = await client.call("GET", "/api/v3/depth", {"symbol": "BNBUSDT"}, signed=False)
    assert depth["asks"] == [["612.34000000", "10.00000000"], ["612.40000000", "10.00000000"]]


async def test_control_validation(client: SignedClient) -> None:
    async def post(path: str, body: object) -> int:
        async with client.session.post(f"{client.base_url}/sim/v1/{path}", json=body) as r:
            return r.status

    assert await post("price", {"symbol": "DOGEUSDT", "price": "1"}) == 400
    assert await post("price", {"symbol": "BTCUSDT", "price": "1.001"}) == 400
    assert await post("price", {"symbol": "BTCUSDT", "price": "-5"}) == 400
    assert await post("faults", {"action": "explode"}) == 400
    assert await post("faults", {"action": "http_503", "endpoint": "order.everything"}) == 400
    assert await post("random-walk", {"enabled": "yes"}) == 400
    assert await post("limits", {"orders_per_10s": 0}) == 400
    assert await post("price", [1, 2]) == 400


async def test_random_walk_moves_prices_until_switched_off(client: SignedClient) -> None:
    answer = await client.control("random-walk", {"enabled": True, "interval_ms": 5, "step_bps": "20"})
    assert answer == {"enabled": True, "interval_ms": 5, "step_bps": "20"}
    start = "50000.00000000"
    for _ in range(500):
        _, ticker, _ = await client.call("GET", "/api/v3/ticker/price", {"symbol": "BTCUSDT"}, signed=False)
        if ticker["price"] != start:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the price never moved")
    assert (await client.control("random-walk", {"enabled": False}))["enabled"] is False
    assert (await client.control("stats"))["random_walk"] is False
