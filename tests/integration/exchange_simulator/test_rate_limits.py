"""Rate limits over HTTP: the usage headers, 429 with Retry-After, then 418 for a client that keeps going."""

from __future__ import annotations

from services.exchange_simulator import RunningSimulator
from tests.integration.exchange_simulator.conftest import SignedClient, away_from_window_edge, limit_order


async def test_used_weight_header_counts_each_endpoint_documented_weight(client: SignedClient) -> None:
    await away_from_window_edge(60_000, margin_ms=3000)
    calls = [
        ("GET", "/api/v3/ping", {}, False, 1),
        ("GET", "/api/v3/time", {}, False, 1),
        ("GET", "/api/v3/exchangeInfo", {}, False, 20),
        ("GET", "/api/v3/ticker/price", {"symbol": "BTCUSDT"}, False, 2),
        ("GET", "/api/v3/ticker/price", {}, False, 4),
        ("GET", "/api/v3/avgPrice", {"symbol": "BTCUSDT"}, False, 2),
        ("GET", "/api/v3/depth", {"symbol": "BTCUSDT", "limit": 500}, False, 25),
        ("GET", "/api/v3/account", {}, True, 20),
        ("GET", "/api/v3/openOrders", {"symbol": "BTCUSDT"}, True, 6),
        ("GET", "/api/v3/openOrders", {}, True, 80),
        ("GET", "/api/v3/allOrders", {"symbol": "BTCUSDT"}, True, 20),
        ("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT"}, True, 20),
        ("GET", "/api/v3/myTrades", {"symbol": "BTCUSDT", "orderId": 1}, True, 5),
        ("GET", "/api/v3/rateLimit/order", {}, True, 40),
        ("POST", "/api/v3/order/test", limit_order(), True, 1),
        ("POST", "/api/v3/order/test", {**limit_order(), "computeCommissionRates": "true"}, True, 20),
        ("POST", "/api/v3/order", limit_order(), True, 1),
        ("GET", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": 1}, True, 4),
        ("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": 1}, True, 1),
        ("DELETE", "/api/v3/openOrders", {"symbol": "BTCUSDT"}, True, 1),  # -2011, still charged
    ]
    used = 0
    for method, path, params, signed, weight in calls:
        _, body, headers = await client.call(method, path, params, signed=signed)
        used += weight
        assert headers["X-MBX-USED-WEIGHT-1M"] == str(used), (path, params, body)


async def test_order_count_headers_count_new_orders_and_fall_on_the_first_fill(client: SignedClient) -> None:
    await away_from_window_edge(10_000, margin_ms=3000)
    counts = []
    for i in range(3):
        _, _, headers = await client.call("POST", "/api/v3/order", limit_order(price=str(49000 - i)))
        counts.append((headers["X-MBX-ORDER-COUNT-10S"], headers["X-MBX-ORDER-COUNT-1D"]))
    assert counts == [("1", "1"), ("2", "2"), ("3", "3")]
    # A cancel is not a new order: no order count headers.
    _, _, headers = await client.call("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": 3})
    assert "X-MBX-ORDER-COUNT-10S" not in headers
    # The first order fills: the unfilled order count falls by one; a filled MARKET order counts 0 net.
    await client.control("price", {"symbol": "BTCUSDT", "price": "49000.00"})
    _, _, headers = await client.call("POST", "/api/v3/order", {**limit_order(), "type": "MARKET", "price": None})
    status, body, headers = await client.call(
        "POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.01"}
    )
    assert status == 200, body
    assert headers["X-MBX-ORDER-COUNT-10S"] == "2"


async def test_429_then_418_for_a_client_that_keeps_going(client: SignedClient, sim: RunningSimulator) -> None:
    await away_from_window_edge(60_000, margin_ms=5000)
    await client.control("limits", {"weight_per_minute": 5, "ban_base_seconds": 7})
    info = await client.call("GET", "/api/v3/exchangeInfo", signed=False)
    assert info[0] == 429  # exchangeInfo weighs 20: over a limit of 5 at once
    await client.control("reset", {})
    await client.control("limits", {"weight_per_minute": 5, "ban_base_seconds": 7})

    for i in range(5):
        status, _, headers = await client.call("GET", "/api/v3/ping", signed=False)
        assert (status, headers["X-MBX-USED-WEIGHT-1M"]) == (200, str(i + 1))
    status, body, headers = await client.call("GET", "/api/v3/ping", signed=False)
    assert status == 429
    assert body == {
        "code": -1003,
        "msg": "Too much request weight used; current limit is 5 request weight per 1 MINUTE. "
        "Please use WebSocket Streams for live updates to avoid polling the API.",
    }
    assert 1 <= int(headers["Retry-After"]) <= 60

    status, body, headers = await client.call("GET", "/api/v3/time", signed=False)
    assert status == 418
    assert body["code"] == -1003 and body["msg"].startswith("Way too much request weight used; IP banned until ")
    assert headers["Retry-After"] == "7"
    status, _, headers = await client.call("GET", "/api/v3/account")
    assert status == 418 and 1 <= int(headers["Retry-After"]) <= 7

    stats = await client.control("stats")
    assert stats["http_429"] == 1 and stats["http_418"] == 2


async def test_orders_limit_gives_429_1015_and_then_418_for_new_orders(client: SignedClient) -> None:
    await away_from_window_edge(10_000, margin_ms=3000)
    await client.control("limits", {"orders_per_10s": 2})
    _, info, _ = await client.call("GET", "/api/v3/exchangeInfo", signed=False)
    assert {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 2} in info["rateLimits"]
    placed = [await client.call("POST", "/api/v3/order", limit_order(price=str(48000 + i))) for i in range(2)]
    assert [status for status, _, _ in placed] == [200, 200]
    status, body, headers = await client.call("POST", "/api/v3/order", limit_order())
    assert (status, body) == (
        429,
        {"code": -1015, "msg": "Too many new orders; current limit is 2 orders per 10 SECOND."},
    )
    assert 1 <= int(headers["Retry-After"]) <= 10
    # Cancels still go through while new orders must wait.
    first_id = placed[0][1]["orderId"]
    assert (await client.call("DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": first_id}))[0] == 200
    status, _, _ = await client.call("POST", "/api/v3/order", limit_order())
    assert status == 418
    stats = await client.control("stats")
    assert sum(stats["orders_per_10s_window"].values()) == 2
