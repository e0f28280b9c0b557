"""`make run`'s launcher, as a user runs it: real processes, real grpcurl, SIGTERM, a second instance."""

import json
import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest

from shared.ready import READY_FILE, wait_ready
from tests.support import ANY_PORT, ROOT, grpcurl, pid_alive, port_is_free, spawn_launcher

pytestmark = pytest.mark.e2e

SERVICES = {
    "ORDER_SERVICE_ADDR": ("trading.order.v1.OrderService", "The public trading API."),
    "USER_SERVICE_ADDR": ("trading.user.v1.UserService", "Manages users, their API keys"),
    "EXCHANGE_GATEWAY_ADDR": ("trading.gateway.v1.ExchangeGateway", "The only process that talks to Binance"),
}
METRICS = ("ORDER_METRICS_ADDR", "USER_METRICS_ADDR", "GATEWAY_METRICS_ADDR")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    var = tmp_path_factory.mktemp("var")
    env = {
        **os.environ,
        **ANY_PORT,
        **{variable: "127.0.0.1:0" for variable in METRICS},
        READY_FILE: str(var / "launcher.ready"),
        "ORDER_DB_URL": f"sqlite:///{var}/order.db",
        "USER_DB_URL": f"sqlite:///{var}/user.db",
        "GATEWAY_DB_URL": f"sqlite:///{var}/gateway.db",
        "TRADING_ADMIN_TOKEN": "adm_launcher_test_token_0123456789",
        "TRADING_SERVICE_TOKEN": "svc_launcher_test_token_0123456789",
        "BINANCE_ENV": "sim",
    }
    env.pop("BINANCE_API_KEY", None)
    env.pop("BINANCE_API_SECRET", None)
    process, out, err = spawn_launcher(env)
    try:
        assert out.wait_for("Trading core is up.", timeout=90), out.text + err.text[-3000:]
        # The addresses the processes bound on port 0, as the launcher's ready file reports them.
        addresses = wait_ready(var / "launcher.ready", process.poll, timeout=30)["addresses"]
        bound = {**env, **addresses}
        del bound[READY_FILE]
        yield bound, process, out, err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_every_service_is_listed_described_and_serving(stack):
    env = stack[0]
    for variable, (service, comment) in SERVICES.items():
        addr = env[variable]
        listed = grpcurl("-plaintext", addr, "list")
        assert listed.returncode == 0, listed.stderr
        assert service in listed.stdout.split()
        described = grpcurl("-plaintext", addr, "describe", service)
        assert comment in described.stdout, described.stdout
        health = grpcurl("-plaintext", "-d", json.dumps({"service": service}), addr, "grpc.health.v1.Health/Check")
        assert json.loads(health.stdout)["status"] == "SERVING"


def test_the_banner_prints_addresses_admin_token_and_grpcurl_lines(stack):
    env, _, out, _ = stack
    text = out.text
    for variable in SERVICES:
        assert env[variable] in text
    assert f"Admin token: {env['TRADING_ADMIN_TOKEN']}" in text
    assert "grpcurl -plaintext" in text


def test_the_banner_prints_each_services_metrics_url_and_each_serves_prometheus_text(stack):
    env, _, out, _ = stack
    for variable in METRICS:
        url = f"http://{env[variable]}/metrics"
        assert url in out.text
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
        assert "# TYPE grpc_server_handled_total counter" in body
        assert "trading_ready 1.0" in body


def test_a_second_make_run_fails_clearly_while_one_is_running(stack):
    env = stack[0]
    second = subprocess.run(["make", "-s", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode != 0
    assert "already in use" in second.stderr
    assert "another `make run`" in second.stderr


def test_sigterm_stops_every_process_cleanly_and_frees_the_ports(stack):
    env, process, out, err = stack
    pids = [int(p) for p in re.findall(r"healthy \(pid (\d+)\)", out.text)]
    assert len(pids) == 4
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    elapsed = time.monotonic() - started
    assert elapsed < 15, f"stopping took {elapsed:.1f} s"
    assert "Stopped." in out.text
    for pid in pids:
        assert not pid_alive(pid), f"orphan process {pid}"
    for variable in SERVICES:
        assert port_is_free(int(env[variable].rsplit(":", 1)[1]))
    assert port_is_free(int(env["SIM_PORT"]))
    logs = err.text
    assert env["TRADING_ADMIN_TOKEN"] not in logs and env["TRADING_SERVICE_TOKEN"] not in logs
