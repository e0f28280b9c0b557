"""The signed REST client over a fake transport: signing, retries, rate-limit answers, headers, secrecy."""

from __future__ import annotations

import logging

import pytest

from services.exchange_gateway.adapters.binance.clock import ExchangeClock
from services.exchange_gateway.adapters.binance.rate_limiter import RateLimiter
from services.exchange_gateway.adapters.binance.rest import BinanceRestClient
from services.exchange_gateway.adapters.binance.signing import hmac_sha256
from services.exchange_gateway.adapters.binance.transport import TransportError
from services.exchange_gateway.domain.errors import ExchangeError, ExchangeOutcome, Failure

from .fakes import FakeTransport, answer

KEY = "testApiKey0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQR"
SECRET = "testApiSecret0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"
NOW = 1_800_000_000_000.0
ORDER = {"symbol": "BTCUSDT", "orderId": 1, "clientOrderId": "c1", "status": "NEW", "origQty": "1", "executedQty": "0"}


class Clock:
    def __init__(self) -> None:
        self.t = NOW

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def local() -> Clock:
    return Clock()


@pytest.fixture
def transport(local) -> FakeTransport:
    return FakeTransport(server_time=lambda: int(local.t))


@pytest.fixture
def client(transport, local) -> BinanceRestClient:
    clock = ExchangeClock(local)
    limiter = RateLimiter(clock.now, timers=False, margin=0.0, local=clock.local)
    return BinanceRestClient(
        transport, base_url="https://api.example", api_key=KEY, api_secret=SECRET, clock=clock, limiter=limiter
    )


NEW_ORDER = [("symbol", "BTCUSDT"), ("side", "BUY"), ("type", "LIMIT"), ("timeInForce", "GTC"), ("quantity", "1")]


async def test_signed_requests_carry_key_timestamp_and_signature_of_the_exact_query(client, transport):
    transport.script("POST", "/api/v3/order", answer(ORDER))
    await client.new_order(NEW_ORDER, timestamp_ms=int(NOW), grant=None, deadline=None)
    (sent,) = transport.of("POST", "/api/v3/order")
    assert sent.headers == {"X-MBX-APIKEY": KEY}
    query, _, signature = sent.query.rpartition("&signature=")
    assert query.startswith("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&newOrderRespType=FULL")
    assert query.endswith(f"&recvWindow=5000&timestamp={int(NOW)}")
    assert signature == hmac_sha256(SECRET, query)


async def test_invalid_timestamp_resyncs_once_and_resends_with_a_new_timestamp(client, transport, local):
    client.clock.offset_ms = -60_000  # our clock is a minute behind the exchange's
    transport.script(
        "POST",
        "/api/v3/order",
        answer({"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}, 400),
    )
    transport.script("POST", "/api/v3/order", answer(ORDER))
    stamps: list[int] = []

    async def record(ts: int) -> None:
        stamps.append(ts)

    order = await client.new_order(
        NEW_ORDER, timestamp_ms=client.clock.now_ms(), grant=None, deadline=None, on_retimestamp=record
    )
    assert order.orderId == 1
    posts = transport.of("POST", "/api/v3/order")
    assert len(posts) == 2
    assert len(transport.of("GET", "/api/v3/time")) == 1
    assert abs(client.clock.offset_ms) < 5
    assert int(posts[1].params["timestamp"]) == stamps[0] == pytest.approx(NOW, abs=5)
    assert client.stats["-1021"] == 1


async def test_a_second_invalid_timestamp_is_not_retried_forever(client, transport):
    reject = answer({"code": -1021, "msg": "Timestamp for this request was 1000ms ahead of the server's time."}, 400)
    transport.script("GET", "/api/v3/order", reject, reject, reject)
    with pytest.raises(ExchangeError) as caught:
        await client.query_order("BTCUSDT", orig_client_order_id="c1")
    assert caught.value.failure is Failure.INVALID_TIMESTAMP
    assert len(transport.of("GET", "/api/v3/order")) == 2


async def test_a_new_order_answered_503_is_unknown_and_never_resent(client, transport):
    transport.script("POST", "/api/v3/order", answer({"code": -1000, "msg": "Internal error"}, 503))
    with pytest.raises(ExchangeError) as caught:
        await client.new_order(NEW_ORDER, timestamp_ms=int(NOW), grant=None, deadline=None)
    assert caught.value.outcome is ExchangeOutcome.UNKNOWN
    assert len(transport.of("POST", "/api/v3/order")) == 1


async def test_a_new_order_that_timed_out_is_unknown_and_never_resent(client, transport):
    transport.script("POST", "/api/v3/order", TransportError("no answer", sent=True))
    with pytest.raises(ExchangeError) as caught:
        await client.new_order(NEW_ORDER, timestamp_ms=int(NOW), grant=None, deadline=None)
    assert caught.value.outcome is ExchangeOutcome.UNKNOWN
    assert len(transport.of("POST", "/api/v3/order")) == 1


async def test_minus_1007_on_a_new_order_is_unknown(client, transport):
    transport.script("POST", "/api/v3/order", answer({"code": -1007, "msg": "Timeout waiting for response"}, 408))
    with pytest.raises(ExchangeError) as caught:
        await client.new_order(NEW_ORDER, timestamp_ms=int(NOW), grant=None, deadline=None)
    assert caught.value.outcome is ExchangeOutcome.UNKNOWN
    assert len(transport.of("POST", "/api/v3/order")) == 1


async def test_a_new_order_that_could_not_connect_is_sent_again(client, transport):
    transport.script("POST", "/api/v3/order", TransportError("refused", sent=False), answer(ORDER))
    order = await client.new_order(NEW_ORDER, timestamp_ms=int(NOW), grant=None, deadline=None)
    assert order.orderId == 1
    assert len(transport.of("POST", "/api/v3/order")) == 2


async def test_queries_are_retried_after_a_5xx(client, transport):
    transport.script("GET", "/api/v3/order", answer({"code": -1000, "msg": "x"}, 502), answer(ORDER))
    order = await client.query_order("BTCUSDT", orig_client_order_id="c1")
    assert order.clientOrderId == "c1"
    assert len(transport.of("GET", "/api/v3/order")) == 2


async def test_429_pauses_all_sending_and_is_a_security_event(client, transport, caplog):
    transport.script(
        "GET",
        "/api/v3/order",
        answer({"code": -1003, "msg": "Too much request weight used"}, 429, Retry_After="7"),
    )
    with caplog.at_level(logging.WARNING, logger="security"), pytest.raises(ExchangeError) as caught:
        await client.query_order("BTCUSDT", orig_client_order_id="c1")
    assert caught.value.failure is Failure.RATE_LIMITED
    status = client.limiter.status()
    assert status.http_429 == 1
    assert status.backoff_until_ms == pytest.approx(NOW + 7000)
    assert len(transport.of("GET", "/api/v3/order")) == 1
    assert any("rate limit" in r.getMessage() for r in caplog.records if r.name == "security")


async def test_418_pauses_until_the_ban_ends(client, transport):
    until = int(NOW) + 300_000
    transport.script(
        "GET",
        "/api/v3/account",
        answer(
            {"code": -1003, "msg": f"Way too much request weight used; IP banned until {until}."},
            418,
            Retry_After="120",
        ),
    )
    with pytest.raises(ExchangeError):
        await client.account()
    status = client.limiter.status()
    assert status.http_418 == 1
    assert status.backoff_until_ms == pytest.approx(until, abs=5)


async def test_usage_headers_raise_the_limiters_counts(client, transport):
    transport.script(
        "GET", "/api/v3/ticker/price", answer({"symbol": "BTCUSDT", "price": "1"}, X_MBX_USED_WEIGHT_1M="4321")
    )
    await client.ticker_price("BTCUSDT")
    weight = next(u for u in client.limiter.status().limits if u.rule.rate_limit_type == "REQUEST_WEIGHT")
    assert weight.used == 4321


async def test_documented_weights_are_charged(client, transport):
    transport.script("GET", "/api/v3/openOrders", answer([]))
    transport.script("GET", "/api/v3/myTrades", answer([]))
    await client.query_order("BTCUSDT", orig_client_order_id="c1")  # 4
    await client.open_orders("BTCUSDT")  # 6
    await client.my_trades("BTCUSDT", 1)  # 5
    await client.exchange_info()  # 20
    weight = next(u for u in client.limiter.status().limits if u.rule.rate_limit_type == "REQUEST_WEIGHT")
    assert weight.used == 35


async def test_keys_secrets_and_signatures_never_reach_the_log(client, transport, caplog):
    transport.script(
        "POST", "/api/v3/order", answer({"code": -2015, "msg": "Invalid API-key, IP, or permissions"}, 401)
    )
    failures = (TransportError("no answer", sent=True), answer({"code": -1000}, 500), answer({"code": -1000}, 500))
    transport.script("GET", "/api/v3/order", *failures)
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(ExchangeError):
            await client.new_order(NEW_ORDER, timestamp_ms=int(NOW), grant=None, deadline=None)
        with pytest.raises(ExchangeError):
            await client.query_order("BTCUSDT", orig_client_order_id="c1")
    signatures = [s.params["signature"] for s in transport.sent if "signature" in s.params]
    text = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for secret in (KEY, SECRET, *signatures):
        assert secret not in text
