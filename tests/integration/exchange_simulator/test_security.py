"""Binance's security checks over HTTP: the documented HMAC vectors, wrong signatures, stale timestamps, API keys.

The vectors are from 2017, so with timestamp checks on they must fail with -1021 (the signature was accepted and
only the timestamp is stale) and never with -1022; a simulator started with ``verify_timestamps=False`` accepts them
through to the order checks (-1121: LTCBTC is not listed here).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from services.exchange_simulator import RunningSimulator, SimConfig, start_simulator
from tests.integration.exchange_simulator.conftest import SignedClient, limit_order

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
QUERY_A = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
SIGNATURE_A = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
QUERY_B = (
    "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC"
    "&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
)
SIGNATURE_B = "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
QUERY_C = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"
BODY_C = "quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559"
SIGNATURE_C = "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
STALE = {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}


async def _vector_sim(verify_timestamps: bool) -> RunningSimulator:
    return await start_simulator(
        SimConfig(port=0, api_key=API_KEY, api_secret=SECRET, verify_timestamps=verify_timestamps)
    )


@pytest.fixture
async def vector_client(session: aiohttp.ClientSession) -> AsyncIterator[SignedClient]:
    running = await _vector_sim(verify_timestamps=True)
    try:
        yield SignedClient(session, running.base_url, API_KEY, SECRET)
    finally:
        await running.stop()


async def test_documented_vectors_pass_the_signature_check(vector_client: SignedClient) -> None:
    url = f"{vector_client.base_url}/api/v3/order"
    headers = {"X-MBX-APIKEY": API_KEY}
    a = await vector_client.raw("POST", f"{url}?{QUERY_A}&signature={SIGNATURE_A}", headers=headers)
    b = await vector_client.raw("POST", f"{url}?{QUERY_B}&signature={SIGNATURE_B}", headers=headers)
    c = await vector_client.raw(
        "POST",
        f"{url}?{QUERY_C}",
        data=f"{BODY_C}&signature={SIGNATURE_C}",
        headers={**headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert [(status, body) for status, body, _ in (a, b, c)] == [(400, STALE)] * 3


async def test_documented_vectors_go_through_when_timestamps_are_not_checked(session: aiohttp.ClientSession) -> None:
    running = await _vector_sim(verify_timestamps=False)
    try:
        client = SignedClient(session, running.base_url, API_KEY, SECRET)
        url = f"{running.base_url}/api/v3/order"
        status, body, _ = await client.raw(
            "POST", f"{url}?{QUERY_A}&signature={SIGNATURE_A.upper()}", headers={"X-MBX-APIKEY": API_KEY}
        )
        assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})
        status, body, _ = await client.raw(
            "POST",
            f"{url}?{QUERY_A.replace('quantity=1', 'quantity=2')}&signature={SIGNATURE_A}",
            headers={"X-MBX-APIKEY": API_KEY},
        )
        assert (status, body) == (400, {"code": -1022, "msg": "Signature for this request is not valid."})
    finally:
        await running.stop()


async def test_a_wrong_signature_gives_1022(vector_client: SignedClient) -> None:
    tampered = SIGNATURE_A[:-1] + ("0" if SIGNATURE_A[-1] != "0" else "1")
    status, body, _ = await vector_client.raw(
        "POST",
        f"{vector_client.base_url}/api/v3/order?{QUERY_A}&signature={tampered}",
        headers={"X-MBX-APIKEY": API_KEY},
    )
    assert (status, body) == (400, {"code": -1022, "msg": "Signature for this request is not valid."})


async def test_a_request_signed_with_another_secret_gives_1022(client: SignedClient) -> None:
    client.secret = "not-the-secret"
    status, body, _ = await client.call("GET", "/api/v3/account")
    assert (status, body) == (400, {"code": -1022, "msg": "Signature for this request is not valid."})


async def test_stale_and_future_timestamps_give_1021(client: SignedClient) -> None:
    now = int(time.time() * 1000)
    status, body, _ = await client.call("GET", "/api/v3/account", {"timestamp": now - 6000})
    assert (status, body) == (400, STALE)
    assert (await client.call("GET", "/api/v3/account", {"timestamp": now - 6000, "recvWindow": 10000}))[0] == 200
    status, body, _ = await client.call("GET", "/api/v3/account", {"timestamp": now + 5000})
    assert (status, body) == (
        400,
        {"code": -1021, "msg": "Timestamp for this request was 1000ms ahead of the server's time."},
    )
    status, body, _ = await client.call("GET", "/api/v3/account", {"recvWindow": 60001})
    assert (status, body) == (400, {"code": -1131, "msg": "recvWindow must be less than 60000."})


async def test_api_key_checks(client: SignedClient) -> None:
    client.key = ""
    status, body, _ = await client.call("GET", "/api/v3/account")
    assert (status, body) == (401, {"code": -2014, "msg": "API-key format invalid."})
    client.key = "someone-elses-key"
    status, body, _ = await client.call("GET", "/api/v3/account")
    assert (status, body) == (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})


async def test_non_ascii_values_are_signed_percent_encoded(client: SignedClient) -> None:
    # The client percent-encodes "１２３４５６" before signing; the signature verifies and the symbol is unknown.
    status, body, _ = await client.call("POST", "/api/v3/order", limit_order(symbol="１２３４５６"))
    assert (status, body) == (400, {"code": -1121, "msg": "Invalid symbol."})


async def test_query_string_value_wins_over_the_body(client: SignedClient) -> None:
    params = {**limit_order(newClientOrderId="from-body"), "timestamp": int(time.time() * 1000)}
    signed_body = client.sign(params)
    query = "newClientOrderId=from-query"
    # Re-sign over query + body (no separator), as Binance defines the payload for mixed requests.
    body_without_signature = signed_body.rsplit("&signature=", 1)[0]
    signature = hmac.new(client.secret.encode(), (query + body_without_signature).encode(), hashlib.sha256).hexdigest()
    status, placed, _ = await client.raw(
        "POST",
        f"{client.base_url}/api/v3/order?{query}",
        data=f"{body_without_signature}&signature={signature}",
        headers={"X-MBX-APIKEY": client.key, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, placed
    assert placed["clientOrderId"] == "from-query"
