"""Ed25519 and RSA API keys at the simulator, beside the HMAC pair: REST (query and body) and the WebSocket API.

The client here signs with ``cryptography`` directly (not the gateway's signer): base64 over the same payload as
HMAC, percent-encoded on the wire.
"""

from __future__ import annotations

import base64
import os
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from services.exchange_simulator import RunningSimulator, SimConfig, start_simulator
from services.exchange_simulator.config import DEV_KEYS_DIR, SIM_DEV_ED25519_API_KEY
from services.exchange_simulator.simulator import Simulator
from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET, ConfigError
from tests.integration.exchange_simulator.conftest import SignedClient, limit_order
from tests.integration.exchange_simulator.test_ws_api import Stream, subscribe_params
from tests.support import PYTHON, ROOT

RSA_API_KEY = "rsaTestApiKey000000000000000000000000000000000000000000000000000"
DEV_PRIVATE_KEY = DEV_KEYS_DIR / "ed25519-dev-private-key.pem"
"""The private half of the simulator's development Ed25519 pair."""
PrivateKey = ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def sign(key: PrivateKey, payload: str) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.sign(payload.encode())
    else:
        raw = key.sign(payload.encode(), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode()


class KeyClient(SignedClient):
    """Signs REST requests with an Ed25519 or RSA private key."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str, private_key: PrivateKey):
        super().__init__(session, base_url, key, "")
        self.private_key = private_key

    def sign(self, params: dict[str, Any]) -> str:
        query = urlencode(params, quote_via=quote, safe="-_.~")
        return f"{query}&signature={quote(sign(self.private_key, query), safe='')}"


def write_public_key(path: Path, key: Any) -> str:
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return str(path)


def dev_ed25519_key() -> ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(DEV_PRIVATE_KEY.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    return key


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
async def rsa_sim(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> AsyncIterator[RunningSimulator]:
    public = write_public_key(tmp_path / "rsa-public.pem", rsa_key)
    running = await start_simulator(SimConfig(port=0, public_key_api_key=RSA_API_KEY, public_key_file=public))
    try:
        yield running
    finally:
        await running.stop()


async def subscribe(sim: RunningSimulator, session: aiohttp.ClientSession, key: str, private_key: PrivateKey) -> Any:
    ws = await session.ws_connect(sim.ws_api_url)
    params: dict[str, Any] = {"apiKey": key, "recvWindow": 5000, "timestamp": int(time.time() * 1000)}
    payload = "&".join(f"{name}={params[name]}" for name in sorted(params))
    params["signature"] = sign(private_key, payload)
    stream = Stream(ws)
    return stream, await stream.request("sub", "userDataStream.subscribe.signature", params)


# ------------------------------------------------------------------------------------------ the development key


async def test_the_shipped_development_ed25519_key_places_queries_and_cancels(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    client = KeyClient(session, sim.base_url, SIM_DEV_ED25519_API_KEY, dev_ed25519_key())
    status, placed, _ = await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="ed-1"))
    assert (status, placed["status"]) == (200, "NEW"), placed
    status, queried, _ = await client.call("GET", "/api/v3/order", {"symbol": "BTCUSDT", "origClientOrderId": "ed-1"})
    assert (status, queried["orderId"]) == (200, placed["orderId"])
    status, cancelled, _ = await client.call(
        "DELETE", "/api/v3/order", {"symbol": "BTCUSDT", "orderId": placed["orderId"]}, in_body=True
    )
    assert (status, cancelled["status"]) == (200, "CANCELED")


async def test_the_hmac_pair_keeps_working_beside_the_ed25519_key(client: SignedClient) -> None:
    status, body, _ = await client.call("GET", "/api/v3/account")
    assert status == 200, body


async def test_the_ed25519_key_subscribes_to_the_user_data_stream(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    stream, answer = await subscribe(sim, session, SIM_DEV_ED25519_API_KEY, dev_ed25519_key())
    assert (answer["status"], answer["result"]) == (200, {"subscriptionId": 0})
    client = KeyClient(session, sim.base_url, SIM_DEV_ED25519_API_KEY, dev_ed25519_key())
    await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="ed-ws"))
    report = await stream.execution()
    assert (report["c"], report["x"]) == ("ed-ws", "NEW")
    await stream.ws.close()


# ------------------------------------------------------------------------------------------ RSA


async def test_an_rsa_key_signs_rest_in_the_query_and_in_the_body(
    rsa_sim: RunningSimulator, session: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    client = KeyClient(session, rsa_sim.base_url, RSA_API_KEY, rsa_key)
    status, placed, _ = await client.call("POST", "/api/v3/order", limit_order(newClientOrderId="rsa-1"))
    assert (status, placed["clientOrderId"]) == (200, "rsa-1"), placed
    status, body, _ = await client.call(
        "POST", "/api/v3/order", limit_order(newClientOrderId="rsa-2", price="48000.00"), in_body=True
    )
    assert (status, body["clientOrderId"]) == (200, "rsa-2"), body
    assert rsa_sim.exchange.open_order_count() == 2


async def test_an_rsa_key_subscribes_and_a_wrong_rsa_signature_is_1022(
    rsa_sim: RunningSimulator, session: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    stream, answer = await subscribe(rsa_sim, session, RSA_API_KEY, rsa_key)
    assert answer["status"] == 200, answer
    await stream.ws.close()

    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stream, answer = await subscribe(rsa_sim, session, RSA_API_KEY, other)
    assert answer["error"] == {"code": -1022, "msg": "Signature for this request is not valid."}
    await stream.ws.close()


# ------------------------------------------------------------------------------------------ refusals


async def test_a_signature_of_another_key_or_payload_is_1022(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    stranger = KeyClient(session, sim.base_url, SIM_DEV_ED25519_API_KEY, ed25519.Ed25519PrivateKey.generate())
    status, body, _ = await stranger.call("GET", "/api/v3/account")
    assert (status, body) == (400, {"code": -1022, "msg": "Signature for this request is not valid."})

    key = dev_ed25519_key()
    query = urlencode({"timestamp": int(time.time() * 1000)})
    signature = quote(sign(key, query + "&recvWindow=1000"), safe="")
    url = f"{sim.base_url}/api/v3/account?{query}&signature={signature}"
    status, body, _ = await stranger.raw("GET", url, headers={"X-MBX-APIKEY": SIM_DEV_ED25519_API_KEY})
    assert (status, body["code"]) == (400, -1022)


async def test_an_hmac_signature_sent_with_the_ed25519_api_key_is_1022(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    mixed = SignedClient(session, sim.base_url, SIM_DEV_ED25519_API_KEY, SIM_DEV_API_SECRET)
    status, body, _ = await mixed.call("GET", "/api/v3/account")
    assert (status, body["code"]) == (400, -1022)
    stream = Stream(await session.ws_connect(sim.ws_api_url))
    params = subscribe_params(key=SIM_DEV_ED25519_API_KEY)
    answer = await stream.request("sub", "userDataStream.subscribe.signature", params)
    assert answer["error"]["code"] == -1022
    await stream.ws.close()


async def test_a_base64_signature_sent_without_percent_encoding_is_1022(
    sim: RunningSimulator, session: aiohttp.ClientSession
) -> None:
    """A raw '+' in a query string is a space once form-decoded, as on Binance: the signature no longer matches."""
    key = dev_ed25519_key()
    client = KeyClient(session, sim.base_url, SIM_DEV_ED25519_API_KEY, key)
    now = int(time.time() * 1000)
    for window in range(1000, 1100):
        query = urlencode({"recvWindow": window, "timestamp": now})
        signature = sign(key, query)
        if "+" in signature:
            break
    else:
        pytest.fail("no signature with a '+' in 100 tries")
    url = f"{sim.base_url}/api/v3/account?{query}&signature="
    headers = {"X-MBX-APIKEY": SIM_DEV_ED25519_API_KEY}
    status, body, _ = await client.raw("GET", url + signature, headers=headers)
    assert (status, body["code"]) == (400, -1022)
    status, body, _ = await client.raw("GET", url + quote(signature, safe=""), headers=headers)
    assert status == 200, body


async def test_an_unknown_api_key_is_2015(sim: RunningSimulator, session: aiohttp.ClientSession) -> None:
    client = KeyClient(session, sim.base_url, "someoneElsesKey", dev_ed25519_key())
    status, body, _ = await client.call("GET", "/api/v3/account")
    assert (status, body) == (401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})


# ------------------------------------------------------------------------------------------ configuration


def test_a_missing_public_key_file_is_a_config_error_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SIM_PUBLIC_KEY_FILE"):
        Simulator(SimConfig(public_key_file=str(tmp_path / "missing.pem")))


def test_a_private_key_or_garbage_as_public_key_is_a_config_error(tmp_path: Path) -> None:
    private = tmp_path / "private.pem"
    private.write_bytes(DEV_PRIVATE_KEY.read_bytes())
    with pytest.raises(ConfigError, match="SIM_PUBLIC_KEY_FILE is not a PEM public key"):
        Simulator(SimConfig(public_key_file=str(private)))


def test_unsupported_public_keys_are_config_errors(tmp_path: Path) -> None:
    ec_key = write_public_key(tmp_path / "ec.pem", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ConfigError, match="unsupported key type"):
        Simulator(SimConfig(public_key_file=ec_key))
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the key refused here
    small = write_public_key(tmp_path / "rsa1024.pem", weak)
    with pytest.raises(ConfigError, match="1024-bit RSA key"):
        Simulator(SimConfig(public_key_file=small))


def test_the_public_key_cannot_share_the_hmac_api_key() -> None:
    with pytest.raises(ConfigError, match="SIM_PUBLIC_KEY_API_KEY"):
        Simulator(SimConfig(public_key_api_key=SIM_DEV_API_KEY))


def test_without_a_public_key_file_only_the_hmac_pair_is_known() -> None:
    assert set(Simulator(SimConfig(public_key_file="")).keys) == {SIM_DEV_API_KEY}


def test_the_process_exits_2_naming_a_bad_public_key_file(tmp_path: Path) -> None:
    env = {**os.environ, "SIM_PORT": "0", "SIM_PUBLIC_KEY_FILE": str(tmp_path / "missing.pem")}
    result = subprocess.run(
        [PYTHON, "-m", "services.exchange_simulator"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert "SIM_PUBLIC_KEY_FILE" in result.stderr
