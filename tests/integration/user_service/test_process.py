"""As a user runs it: the real process (restart keeps the data, SIGTERM exits 0) and the real grpcurl."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import grpc
import pytest

from services.user_service.bootstrap import RunningService
from shared.ready import READY_FILE, wait_ready
from tests.integration.user_service.helpers import ADMIN_TOKEN, SERVICE_TOKEN, Client
from tests.support import PYTHON, ROOT, OutputCollector, grpcurl


def _spawn(db: Path, ready_file: Path, **extra: str) -> tuple[subprocess.Popen[bytes], OutputCollector]:
    ready_file.unlink(missing_ok=True)
    env = {
        **os.environ,
        "USER_SERVICE_ADDR": "127.0.0.1:0",
        READY_FILE: str(ready_file),
        "USER_METRICS_ADDR": "127.0.0.1:0",
        "USER_DB_URL": f"sqlite:///{db}",
        "TRADING_ADMIN_TOKEN": ADMIN_TOKEN,
        "TRADING_SERVICE_TOKEN": SERVICE_TOKEN,
        "LOG_LEVEL": "INFO",
        "USER_ASSETS": "BTC,USDT",
        **extra,
    }
    process = subprocess.Popen(
        [PYTHON, "-m", "services.user_service"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert process.stderr is not None
    return process, OutputCollector(process.stderr)


async def _listening_port(process: subprocess.Popen[bytes], output: OutputCollector, ready_file: Path) -> int:
    """Wait until the process logs that it listens and its ready file names the port; return its gRPC port."""
    assert await asyncio.to_thread(output.wait_for, '"listening"', 30), output.text
    return int((await asyncio.to_thread(wait_ready, ready_file, process.poll, 30))["grpc_port"])


def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=30)


@pytest.mark.e2e
async def test_data_survives_a_restart_of_the_process(tmp_path: Path) -> None:
    db = tmp_path / "u.db"
    ready_file = tmp_path / "user_service.ready"
    process, output = _spawn(db, ready_file)
    try:
        port = await _listening_port(process, output, ready_file)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = Client(channel)
            user = await client.new_user("ann")
            await client.deposit(user, "BTC", "1.23456789", "before-restart")
            await client.reserve("ord-1", user, "BTC", "0.5")
    finally:
        code = await asyncio.to_thread(_stop, process)
    assert code == 0, output.text
    assert "Traceback" not in output.text
    assert ADMIN_TOKEN not in output.text and SERVICE_TOKEN not in output.text

    process, output = _spawn(db, ready_file)
    try:
        port = await _listening_port(process, output, ready_file)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            client = Client(channel)
            assert await client.balances(user) == {"BTC": ("0.73456789", "0.50000000", "1.23456789")}
            again = await client.deposit(user, "BTC", "1.23456789", "before-restart")
            assert again.balance.available == "1.23456789", "the stored first response survived too"
            assert (await client.balances(user))["BTC"][0] == "0.73456789", "and nothing was credited twice"
            await client.assert_ledger_explains_balances(user)
    finally:
        code = await asyncio.to_thread(_stop, process)
    assert code == 0, output.text


@pytest.mark.e2e
def test_the_process_refuses_to_start_without_tokens(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRADING_")}
    env.update(USER_SERVICE_ADDR="127.0.0.1:0", USER_DB_URL=f"sqlite:///{tmp_path}/u.db")
    result = subprocess.run(
        [PYTHON, "-m", "services.user_service"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "TRADING_ADMIN_TOKEN" in result.stderr
    assert "Traceback" not in result.stderr


async def test_grpcurl_deposit_and_balances_as_a_user_would(service: RunningService) -> None:
    admin = ["-plaintext", "-H", f"authorization: Bearer {ADMIN_TOKEN}"]

    async def call(method: str, body: dict[str, object], auth: list[str] = admin) -> dict[str, object]:
        result = await asyncio.to_thread(
            grpcurl, *auth, "-d", json.dumps(body), service.addr, f"trading.user.v1.UserService/{method}"
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    user = (await call("CreateUser", {"username": "gina", "email": "gina@example.com"}))["user"]
    assert isinstance(user, dict)
    for i, amount in enumerate(["0.1", "0.1", "0.1", "0.2"]):
        await call("Deposit", {"user_id": user["userId"], "asset": "USDT", "amount": amount, "request_id": f"g{i}"})
    key = await call("CreateApiKey", {"user_id": user["userId"], "label": "cli"})
    as_user = ["-plaintext", "-H", f"authorization: Bearer {key['apiKey']}"]
    balances = await call("GetBalances", {"user_id": user["userId"]}, as_user)
    assert balances == {
        "balances": [{"asset": "USDT", "available": "0.50000000", "locked": "0.00000000", "total": "0.50000000"}]
    }
    refused = await asyncio.to_thread(
        grpcurl,
        *as_user,
        "-d",
        json.dumps({"user_id": user["userId"], "asset": "USDT", "amount": "1", "request_id": "x"}),
        service.addr,
        "trading.user.v1.UserService/Deposit",
    )
    assert refused.returncode != 0
    assert "PermissionDenied" in refused.stderr
    described = await asyncio.to_thread(grpcurl, "-plaintext", service.addr, "describe", "trading.user.v1.UserService")
    assert "idempotent on request_id" in described.stdout, "reflection serves the proto comments"
