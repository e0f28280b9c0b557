"""The REST API over loopback with a plain signed HTTP client: orders, queries, cancels and Binance's errors."""

from __future__ import annotations

from typing import Any

import pytest

from services.exchange_simulator import RunningSimulator
from tests.integration.exchange_simulator.conftest import SignedClient, limit_order


async def test_place_query_and_cancel_a_limit_order(client: SignedClient, sim: RunningSimulator) -> None:
    status, placed, headers = await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="rest-1"))
    assert status == 200, placed
    # LIMIT defaults to FULL; numbers are 8-decimal strings; Binance spells it "cummulativeQuoteQty".
    assert placed["clientOrderId"] == "rest-1"
    assert placed["status"] == "NEW"
    assert placed["price"] == "49000.00000000"
    assert placed["origQty"] == "0.01000000"
    assert placed["cummulativeQuoteQty"] == "0.00000000"
    assert placed["fills"] == []
    assert placed["orderListId"] == -1
    assert "X-MBX-ORDER-COUNT-10S" in headers

    by_id = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]})
    by_client_id = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "rest-1"})
    assert by_id[0] == by_client_id[0] == 200
    assert by_id[1] == by_client_id[1]
    assert by_id[1]["isWorking"] is True and by_id[1]["status"] == "NEW"

    status, opened, _ = await client.call("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    assert [o["clientOrderId"] for o in opened] == ["rest-1"]

    status, cancelled, _ = await client.call(
        "DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "rest-1"}, in_body=True
    )
    assert status == 200, cancelled
    assert cancelled["status"] == "CANCELED"
    assert cancelled["origClientOrderId"] == "rest-1"
    assert cancelled["clientOrderId"] != "rest-1"

    status, again, _ = await client.call("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]})
    assert (status, again) == (400, {"code": -2011, "msg": "Unknown order sent."})
    status, query, _ = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]})
    assert query["status"] == "CANCELED"
    assert sim.exchange.open_order_count() == 0


async def test_market_order_full_response_has_fills_and_account_reflects_them(client: SignedClient) -> None:
    status, placed, _ = await client.call(
        "POST", "/api/v3/order", {"symbol": "ETHUSDT", "side": "SELL", "type": "MARKET", "quantity": "2"}
    )
    assert status == 200, placed
    assert placed["status"] == "FILLED"
    trade_id = placed["fills"][0]["tradeId"]
    assert placed["fills"] == [
        {
            "price": "3000.00000000",
            "qty": "2.00000000",
            "commission": "6.00000000",
            "commissionAsset": "USDT",
            "tradeId": trade_id,
        }
    ]
    _, account, _ = await client.call("GET", "/api/v3/account")
    balances = {b["asset"]: b for b in account["balances"]}
    assert balances["ETH"] == {"asset": "ETH", "free": "9998.00000000", "locked": "0.00000000"}
    assert balances["USDT"]["free"] == "10005994.00000000"
    _, trades, _ = await client.call("GET", "/api/v3/myTrades", {"symbol": "ETHUSDT", "orderId": placed["orderId"]})
    assert [(t["id"], t["qty"], t["quoteQty"], t["isBuyer"], t["isMaker"]) for t in trades] == [
        (trade_id, "2.00000000", "6000.00000000", False, False)
    ]
    _, all_orders, _ = await client.call("GET", "/api/v3/allOrders", {"symbol": "ETHUSDT"})
    assert [o["status"] for o in all_orders] == ["FILLED"]


@pytest.mark.parametrize(("order_type", "expected"), [("LIMIT", "FULL"), ("MARKET", "FULL"), ("STOP_LOSS", "ACK")])
async def test_response_type_defaults(client: SignedClient, order_type: str, expected: str) -> None:
    params: dict[str, Any] = {"symbol": "BTCUSDT", "side": "SELL", "type": order_type, "quantity": "0.01"}
    if order_type == "LIMIT":
        params.update(price="51000", timeInForce="GTC")
    if order_type == "STOP_LOSS":
        params.update(stopPrice="45000")
    status, body, _ = await client.call("POST", "/api/v3/order", params)
    assert status == 200, body
    assert ("fills" in body) == (expected == "FULL")
    assert ("status" in body) == (expected != "ACK")
    status, result, _ = await client.call("POST", "/api/v3/order", {**params, "newOrderRespType": "RESULT"})
    assert status == 200 and "status" in result and "fills" not in result


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"price": "49000.001"}, "Filter failure: PRICE_FILTER"),
        ({"quantity": "0.000015"}, "Filter failure: LOT_SIZE"),
        (
            {"type": "MARKET", "quantity": "150", "price": None, "timeInForce": None},
            "Filter failure: MARKET_LOT_SIZE",
        ),
        ({"quantity": "0.0001"}, "Filter failure: NOTIONAL"),
        ({"price": "260000"}, "Filter failure: PERCENT_PRICE_BY_SIDE"),
    ],
)
async def test_each_filter_failure_answers_1013_with_its_message(
    client: SignedClient, overrides: dict[str, Any], message: str
) -> None:
    params = {k: v for k, v in limit_order(**overrides).items() if v is not None}
    status, body, _ = await client.call("POST", "/api/v3/order", params)
    assert (status, body) == (400, {"code": -1013, "msg": message})


async def test_max_num_algo_orders_and_max_num_orders_over_http(client: SignedClient) -> None:
    await client.control("limits", {"orders_per_10s": 1000, "orders_per_day": 10000})
    for i in range(5):
        stop = {
            "symbol": "BTCUSDT",
            "side": "SELL",
            "type": "STOP_LOSS",
            "quantity": "0.001",
            "stopPrice": str(40000 + i),
        }
        assert (await client.call("POST", "/api/v3/order", stop))[0] == 200
    status, body, _ = await client.call("POST", "/api/v3/order", {**stop, "stopPrice": "39000"})
    assert (status, body) == (400, {"code": -1013, "msg": "Filter failure: MAX_NUM_ALGO_ORDERS"})
    for _ in range(195):
        assert (await client.call("POST", "/api/v3/order", limit_order(quantity="0.001")))[0] == 200
    status, body, _ = await client.call("POST", "/api/v3/order", limit_order(quantity="0.001"))
    assert (status, body) == (400, {"code": -1013, "msg": "Filter failure: MAX_NUM_ORDERS"})


async def test_matching_engine_rejections(client: SignedClient) -> None:
    await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="dup"))
    status, body, _ = await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="dup"))
    assert (status, body) == (400, {"code": -2010, "msg": "Duplicate order sent."})
    status, body, _ = await client.call(
        "POST",
        "/api/v3/order",
        {k: v for k, v in {**limit_order(price="50000.00"), "type": "LIMIT_MAKER"}.items() if k != "timeInForce"},
    )
    assert (status, body) == (400, {"code": -2010, "msg": "Order would immediately match and take."})
    status, body, _ = await client.call(
        "POST",
        "/api/v3/order",
        {"symbol": "BTCUSDT", "side": "SELL", "type": "STOP_LOSS", "quantity": "0.01", "stopPrice": "50000"},
    )
    assert (status, body) == (400, {"code": -2010, "msg": "Order would trigger immediately."})

    await client.control("reset", {"balances": {"USDT": "100", "BTC": "0.001"}})
    status, body, _ = await client.call("POST", "/api/v3/order", limit_order())
    assert (status, body) == (400, {"code": -2010, "msg": "Account has insufficient balance for requested action."})
    status, body, _ = await client.call("POST", "/api/v3/order", limit_order(side="SELL", price="51000"))
    assert (status, body) == (400, {"code": -2010, "msg": "Account has insufficient balance for requested action."})


async def test_request_errors(client: SignedClient) -> None:
    status, body, _ = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT"})
    assert (status, body) == (
        400,
        {"code": -1102, "msg": "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!"},
    )
    status, body, _ = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": 424242})
    assert (status, body) == (400, {"code": -2013, "msg": "Order does not exist."})
    status, body, _ = await client.call("GET", "/api/v3/order", {"symbol": "NOPEUSDT", "orderId": 1})
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
    status, body, _ = await client.call("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "LIMIT"})
    assert body["code"] == -1102
    status, body, _ = await client.call("DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"})
    assert (status, body) == (400, {"code": -2011, "msg": "Unknown order sent."})


async def test_market_data_endpoints(client: SignedClient) -> None:
    status, info, _ = await client.call("GET", "/api/v3/exchangeInfo", {"symbol": "BTCUSDT"}, signed=False)
    assert status == 200
    filters = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
    assert filters["MAX_NUM_ORDERS"] == {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200}
    assert {"ETHUSDT", "BNBUSDT"} <= {
        s["symbol"] for s in (await client.call("GET", "/api/v3/exchangeInfo", signed=False))[1]["symbols"]
    }
    assert (await client.call("GET", "/api/v3/ticker/price", {"symbol": "ETHUSDT"}, signed=False))[1] == {
        "symbol": "ETHUSDT",
        "price": "3000.00000000",
    }
    _, avg, _ = await client.call("GET", "/api/v3/avgPrice", {"symbol": "BNBUSDT"}, signed=False)
    assert avg["price"] == "600.00000000" and avg["mins"] == 5
    _, depth, _ = await client.call("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": 5}, signed=False)
    assert depth["asks"][0] == ["50000.00000000", "5.00000000"]
    assert depth["asks"][1][0] == "50005.00000000" and depth["bids"][1][0] == "49995.00000000"
    assert len(depth["bids"]) == 5
    _, now, _ = await client.call("GET", "/api/v3/time", signed=False)
    assert isinstance(now["serverTime"], int)
    assert (await client.call("GET", "/api/v3/ping", signed=False))[1] == {}
    _, limits, _ = await client.call("GET", "/api/v3/rateLimit/order")
    assert [(x["interval"], x["intervalNum"], x["limit"]) for x in limits] == [("SECOND", 10, 50), ("DAY", 1, 160000)]
