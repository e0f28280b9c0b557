"""The real gateway signing with Ed25519 and RSA keys against the in-process simulator.

Each test writes its keys to a temporary directory: an RSA key (PKCS#8, unencrypted) and an Ed25519 key encrypted
with a passphrase. Orders, cancels, queries, balances and the user data stream all go through the configured key;
a wrong or unreadable key file and a wrong passphrase stop the start with a ConfigError naming the variable, and
no log line or output carries the key or the passphrase.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from services.exchange_gateway.bootstrap import start
from services.exchange_gateway.config import Config
from services.exchange_simulator.app import SimConfig, start_simulator
from shared.config import ConfigError
from tests.support import PYTHON, ROOT
from trading.gateway.v1 import gateway_pb2

from .conftest import ADMIN_TOKEN, SERVICE, SERVICE_TOKEN, Gateway, Sim, eventually, launcher, pb, sim_gateway_config

KEY_API_KEY = "keyTypeTestApiKey0000000000000000000000000000000000000000000000"
PASSPHRASE = "a passphrase for the test key 0001"


@dataclass
class KeyFiles:
    """A private key on disk (what the gateway reads) and what must never reach a log."""

    kind: str
    private_file: Path
    public_file: Path
    passphrase: str
    secrets: tuple[str, ...]


def write_keys(tmp_path: Path, kind: str) -> KeyFiles:
    key: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if kind == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        passphrase = ""
        raw = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        passphrase = PASSPHRASE
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
    encryption = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    private_file = tmp_path / f"{kind}-private.pem"
    private_file.write_bytes(pem)
    public_file = tmp_path / f"{kind}-public.pem"
    public_file.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    body = "".join(line for line in pem.decode().splitlines() if not line.startswith("-----"))
    secrets = (body[:40], body[-40:], base64.b64encode(raw).decode()[:32], raw.hex()[:32])
    return KeyFiles(kind, private_file, public_file, passphrase, secrets + ((passphrase,) if passphrase else ()))


def gateway_config(sim: Sim, tmp_path: Path, keys: KeyFiles) -> Config:
    return sim_gateway_config(
        sim,
        tmp_path,
        api_key=KEY_API_KEY,
        api_secret="",
        private_key_file=str(keys.private_file),
        private_key_passphrase=keys.passphrase,
        startup_timeout_s=5.0,
    )


Leaked = Callable[[KeyFiles], list[str]]


@pytest.fixture
def leaked(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Leaked:
    """Logs every record (DEBUG and up) and gives the secrets of a ``KeyFiles`` found in any captured record
    (message, arguments, extras, traceback) or output."""
    caplog.set_level(logging.DEBUG)

    def found(keys: KeyFiles) -> list[str]:
        texts = [f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records]
        captured = capsys.readouterr()
        texts += [captured.out, captured.err]
        return [secret for secret in keys.secrets if any(secret in text for text in texts)]

    return found


@pytest.fixture(params=["ed25519-encrypted", "rsa"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> KeyFiles:
    return write_keys(tmp_path, "rsa" if request.param == "rsa" else "ed25519")


@pytest.fixture
async def keyed_sim(keys: KeyFiles) -> AsyncIterator[Sim]:
    running = await start_simulator(
        SimConfig(port=0, public_key_api_key=KEY_API_KEY, public_key_file=str(keys.public_file))
    )
    session = aiohttp.ClientSession()
    yield Sim(running, session)
    await session.close()
    await running.stop()


StartKeyed = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def start_keyed(keyed_sim: Sim, keys: KeyFiles, tmp_path: Path) -> AsyncIterator[StartKeyed]:
    async with launcher(gateway_config(keyed_sim, tmp_path, keys)) as launch:
        yield launch


# ------------------------------------------------------------------------------------------ working keys


async def test_orders_cancels_queries_and_the_user_data_stream_work_with_the_key(
    start_keyed: StartKeyed,
    keyed_sim: Sim,
    keys: KeyFiles,
    leaked: Leaked,
) -> None:
    gateway = await start_keyed()
    await eventually(lambda: _subscribed(keyed_sim), what="user data stream subscribed with the key")

    resting = await gateway.submit("key-rest")
    assert resting.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW
    queried = await gateway.get("key-rest", refresh=True)
    assert queried.exchange_order_id == resting.exchange_order_id
    cancelled = await gateway.cancel("key-rest")
    assert cancelled.status == gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED

    to_fill = await gateway.submit("key-fill", price="49500.00")
    events_before = gateway.running.internals.user_stream.events
    await keyed_sim.price("BTCUSDT", "49400.00")  # the resting buy fills as maker: only the stream tells
    executions = await gateway.executions(0, 4)
    assert [(e.client_order_id, e.execution_type) for e in executions] == [
        ("key-rest", gateway_pb2.EXECUTION_TYPE_NEW),
        ("key-rest", gateway_pb2.EXECUTION_TYPE_CANCELED),
        ("key-fill", gateway_pb2.EXECUTION_TYPE_NEW),
        ("key-fill", gateway_pb2.EXECUTION_TYPE_TRADE),
    ]
    assert executions[-1].exchange_order_id == to_fill.exchange_order_id
    assert gateway.running.internals.user_stream.events > events_before

    balances = await gateway.stub.GetAccountBalances(pb.GetAccountBalancesRequest(), metadata=SERVICE)
    assert {b.asset for b in balances.balances} >= {"BTC", "USDT"}
    assert (await keyed_sim.stats())["ws_subscriptions"] == 1
    assert leaked(keys) == []


async def test_the_gateway_reconnects_its_stream_with_a_fresh_signature(
    start_keyed: StartKeyed, keyed_sim: Sim
) -> None:
    gateway = await start_keyed()
    await eventually(lambda: _subscribed(keyed_sim), what="first subscription")
    connects = gateway.running.internals.user_stream.connects
    await keyed_sim.post("faults", {"action": "drop_ws"})
    await eventually(
        lambda: _connects_above(gateway, connects), timeout=15.0, what="the stream resubscribed with the key"
    )
    assert (await keyed_sim.stats())["ws_subscriptions"] == 1


# ------------------------------------------------------------------------------------------ start-up errors


async def test_an_unreadable_key_file_stops_the_start_naming_the_variable(
    keyed_sim: Sim,
    keys: KeyFiles,
    tmp_path: Path,
    leaked: Leaked,
) -> None:
    config = gateway_config(keyed_sim, tmp_path, keys)
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_FILE: cannot read") as missing:
        await start(replace(config, private_key_file=str(tmp_path / "no-such-key.pem")))
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_FILE: cannot read"):
        await start(replace(config, private_key_file=str(tmp_path)))  # a directory
    assert "no-such-key.pem" in str(missing.value)
    assert not (tmp_path / "gateway.db").exists()  # refused before anything was opened
    assert leaked(keys) == []


async def test_a_wrong_key_file_stops_the_start_naming_the_variable(
    keyed_sim: Sim,
    keys: KeyFiles,
    tmp_path: Path,
    leaked: Leaked,
) -> None:
    config = gateway_config(keyed_sim, tmp_path, keys)
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_FILE is not a PEM private key"):
        await start(replace(config, private_key_file=str(keys.public_file), private_key_passphrase=""))
    assert leaked(keys) == []


async def test_a_wrong_passphrase_stops_the_start_naming_the_variable(
    keyed_sim: Sim, tmp_path: Path, leaked: Leaked
) -> None:
    keys = write_keys(tmp_path, "ed25519")
    config = gateway_config(keyed_sim, tmp_path, keys)
    wrong = "not the passphrase of this key"
    with pytest.raises(ConfigError, match="BINANCE_PRIVATE_KEY_PASSPHRASE does not decrypt") as info:
        await start(replace(config, private_key_passphrase=wrong))
    assert wrong not in str(info.value)
    with pytest.raises(ConfigError, match="set BINANCE_PRIVATE_KEY_PASSPHRASE"):
        await start(replace(config, private_key_passphrase=""))
    assert leaked(replace(keys, secrets=(*keys.secrets, wrong))) == []


def test_the_process_exits_2_naming_the_variable_without_key_material(tmp_path: Path) -> None:
    keys = write_keys(tmp_path, "ed25519")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "GATEWAY_", "TRADING_"))},
        "BINANCE_ENV": "sim",
        "BINANCE_API_KEY": KEY_API_KEY,
        "BINANCE_PRIVATE_KEY_FILE": str(keys.private_file),
        "BINANCE_PRIVATE_KEY_PASSPHRASE": "the wrong passphrase 0001",
        "TRADING_SERVICE_TOKEN": SERVICE_TOKEN,
        "TRADING_ADMIN_TOKEN": ADMIN_TOKEN,
        "GATEWAY_DB_URL": f"sqlite:///{tmp_path / 'gateway.db'}",
        "EXCHANGE_GATEWAY_ADDR": "127.0.0.1:0",
        "GATEWAY_METRICS_ADDR": "127.0.0.1:0",
    }
    result = subprocess.run(
        [PYTHON, "-m", "services.exchange_gateway"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert "BINANCE_PRIVATE_KEY_PASSPHRASE does not decrypt" in result.stderr
    output = result.stdout + result.stderr
    assert [s for s in (*keys.secrets, "the wrong passphrase 0001") if s in output] == []


# ------------------------------------------------------------------------------------------ helpers


async def _subscribed(sim: Sim) -> bool:
    return (await sim.stats())["ws_subscriptions"] == 1


async def _connects_above(gateway: Gateway, connects: int) -> bool:
    stream = gateway.running.internals.user_stream
    return stream.connects > connects and stream.connected.is_set()
