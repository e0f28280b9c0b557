"""Safe defaults, as a user meets them: the real processes refuse plaintext off loopback, and ``make run``'s
launcher with ``TRADING_TLS_DIR`` runs everything over TLS and prints grpcurl lines that work.

The non-loopback address is 0.0.0.0:0 and is used only for the bind attempt: no traffic is sent to it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from launcher.certs import make_dev_certs
from shared.ready import wait_ready
from tests.support import PYTHON, ROOT, spawn_launcher

from .conftest import base_env

pytestmark = pytest.mark.e2e

ADDRESS_VARIABLES = {
    "order_service": "ORDER_SERVICE_ADDR",
    "user_service": "USER_SERVICE_ADDR",
    "exchange_gateway": "EXCHANGE_GATEWAY_ADDR",
}


def run_service(name: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", f"services.{name}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("name", list(ADDRESS_VARIABLES))
def test_a_service_refuses_plaintext_on_a_non_loopback_address_naming_the_variables(tmp_path: Path, name: str):
    variable = ADDRESS_VARIABLES[name]
    env = {**base_env(tmp_path), variable: "0.0.0.0:0"}
    refused = run_service(name, env)
    assert refused.returncode == 2, refused.stderr
    for text in (variable, "0.0.0.0:0", "TRADING_TLS_DIR", "TRADING_ALLOW_PLAINTEXT"):
        assert text in refused.stderr, refused.stderr
    assert not list(tmp_path.glob("*.db")), "it refused before opening its database"


def test_a_service_refuses_to_start_when_the_tls_folder_lacks_its_certificate(tmp_path: Path):
    env = {**base_env(tmp_path), "TRADING_TLS_DIR": str(tmp_path / "empty")}
    (tmp_path / "empty").mkdir()
    refused = run_service("user_service", env)
    assert refused.returncode == 2
    assert "TRADING_TLS_DIR" in refused.stderr and "ca.crt" in refused.stderr


def test_the_launcher_with_tls_prints_grpcurl_lines_that_work(tmp_path: Path):
    certs = tmp_path / "tls"
    make_dev_certs(certs)
    env = {
        **base_env(tmp_path),
        "TRADING_TLS_DIR": str(certs),
        "ORDER_METRICS_ADDR": "127.0.0.1:0",
        "USER_METRICS_ADDR": "127.0.0.1:0",
        "GATEWAY_METRICS_ADDR": "127.0.0.1:0",
        "TRADING_READY_FILE": str(tmp_path / "launcher.ready"),
    }
    process, out, err = spawn_launcher(env)
    try:
        assert out.wait_for("Ctrl-C stops everything.", timeout=120), out.text + err.text[-3000:]
        addresses = wait_ready(tmp_path / "launcher.ready", process.poll, timeout=30)["addresses"]
        text = out.text
        assert f"-cacert {certs / 'ca.crt'}" in text and "-plaintext" not in text
        for variable in ("USER_SERVICE_INTERNAL_PORT", "EXCHANGE_GATEWAY_INTERNAL_PORT"):
            assert f"127.0.0.1:{addresses[variable]}" in text, variable
        # The "Try:" lines, continuation lines joined, run as a user pastes them into a shell.
        tried = text.split("Try:\n", 1)[1].split("  (the README", 1)[0]
        commands = [c.strip() for c in re.sub(r"\\\n\s*", "", tried).splitlines() if c.strip()]
        assert len(commands) == 3, commands
        results = [subprocess.run(["bash", "-c", c], capture_output=True, text=True, timeout=30) for c in commands]
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        assert "trading.user.v1.UserService" in results[0].stdout
        assert "rpc CreateUser" in results[1].stdout
        assert '"username": "alice"' in results[2].stdout
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert "Stopped." in out.text
