"""`make run` stopped and started again on the same databases: no trade is lost.

The simulator forgets everything when it restarts (as a testnet reset does); its order and trade ids
start from the clock, so the gateway's journal cannot mistake new trades for old ones. Orders placed
after the restart fill and settle; the order that was resting before it is ended as forgotten by the
exchange, with its funds released.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc
import pytest

from shared.ready import READY_FILE, wait_ready
from tests.support import ANY_PORT, spawn_launcher
from trading.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from trading.user.v1 import user_service_pb2, user_service_pb2_grpc

pytestmark = pytest.mark.e2e

D = Decimal
FINAL = {
    order_pb2.ORDER_STATUS_FILLED,
    order_pb2.ORDER_STATUS_CANCELLED,
    order_pb2.ORDER_STATUS_EXPIRED,
    order_pb2.ORDER_STATUS_REJECTED,
}


class Launcher:
    """``make run``'s launcher on port 0: ``env`` holds the addresses of the run that is up."""

    def __init__(self, env: dict[str, str], ready_file: Path):
        self.env = env
        self.ready_file = ready_file
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.start_capturing()

    def start_capturing(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        env = {**self.env, **ANY_PORT, READY_FILE: str(self.ready_file)}
        self.process, self.out, err = spawn_launcher(env)
        assert self.out.wait_for("Trading core is up.", timeout=90), self.out.text + err.text[-3000:]
        assert self.out.wait_for("Ctrl-C", timeout=10)
        self.env.update(wait_ready(self.ready_file, self.process.poll, timeout=30)["addresses"])

    def banner_value(self, prefix: str) -> str:
        """The quoted value of the banner line starting with ``prefix`` (e.g. "export ADMIN=")."""
        line = next(line.strip() for line in self.out.text.splitlines() if line.strip().startswith(prefix))
        return line.removeprefix(prefix).strip("'")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            assert self.process.wait(timeout=60) == 0


@pytest.fixture
def launcher(tmp_path: Path) -> Iterator[Launcher]:
    env = {
        **os.environ,
        "ORDER_METRICS_ADDR": "",
        "USER_METRICS_ADDR": "",
        "GATEWAY_METRICS_ADDR": "",
        "ORDER_DB_URL": f"sqlite:///{tmp_path}/order.db",
        "USER_DB_URL": f"sqlite:///{tmp_path}/user.db",
        "GATEWAY_DB_URL": f"sqlite:///{tmp_path}/gateway.db",
        "TRADING_ADMIN_TOKEN": "adm_restart_test_token_0123456789",
        "TRADING_SERVICE_TOKEN": "svc_restart_test_token_0123456789",
        "BINANCE_ENV": "sim",
        "LOG_LEVEL": "WARNING",
    }
    for name in ("BINANCE_API_KEY", "BINANCE_API_SECRET", "BINANCE_PRIVATE_KEY_FILE", "TRADING_TLS_DIR"):
        env.pop(name, None)
    running = Launcher(env, tmp_path / "launcher.ready")
    try:
        yield running
    finally:
        if running.process is not None and running.process.poll() is None:
            running.process.kill()
            running.process.wait()


def wait_final(orders: Any, auth: Any, order_id: str, timeout: float = 60.0) -> order_pb2.Order:
    deadline = time.monotonic() + timeout
    while True:
        order = orders.GetOrder(order_service_pb2.GetOrderRequest(order_id=order_id), metadata=auth, timeout=5).order
        if order.status in FINAL:
            return order
        assert time.monotonic() < deadline, f"order stuck: {order}"
        time.sleep(0.2)


def test_after_make_run_restarts_new_orders_fill_and_settle_and_the_forgotten_one_is_released(
    launcher: Launcher,
) -> None:
    env = launcher.env
    admin = (("authorization", f"Bearer {env['TRADING_ADMIN_TOKEN']}"),)
    launcher.start()
    with grpc.insecure_channel(env["USER_SERVICE_ADDR"]) as user_channel:
        users = user_service_pb2_grpc.UserServiceStub(user_channel)
        user_id = users.CreateUser(
            user_service_pb2.CreateUserRequest(username="restarter", email="restarter@example.com"), metadata=admin
        ).user.user_id
        users.Deposit(
            user_service_pb2.DepositRequest(user_id=user_id, asset="USDT", amount="10000", request_id="d-1"),
            metadata=admin,
        )
        api_key = users.CreateApiKey(user_service_pb2.CreateApiKeyRequest(user_id=user_id), metadata=admin).api_key
    auth = (("authorization", f"Bearer {api_key}"),)

    def place(orders: Any, **fields: Any) -> order_pb2.Order:
        request = order_service_pb2.PlaceOrderRequest(symbol="BTCUSDT", side=order_pb2.ORDER_SIDE_BUY, **fields)
        return orders.PlaceOrder(request, metadata=auth, timeout=20).order

    with grpc.insecure_channel(env["ORDER_SERVICE_ADDR"]) as channel:
        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        before = wait_final(orders, auth, place(orders, type=order_pb2.ORDER_TYPE_MARKET, quantity="0.01").order_id)
        resting = place(orders, type=order_pb2.ORDER_TYPE_LIMIT, quantity="0.01", price="30000.00")
    launcher.stop()

    launcher.start()
    with grpc.insecure_channel(env["ORDER_SERVICE_ADDR"]) as channel:
        orders = order_service_pb2_grpc.OrderServiceStub(channel)
        after = [
            wait_final(orders, auth, place(orders, type=order_pb2.ORDER_TYPE_MARKET, quantity="0.01").order_id)
            for _ in range(3)
        ]
        forgotten = wait_final(orders, auth, resting.order_id, timeout=90)
    assert before.status == order_pb2.ORDER_STATUS_FILLED
    assert [o.status for o in after] == [order_pb2.ORDER_STATUS_FILLED] * 3
    assert forgotten.status == order_pb2.ORDER_STATUS_EXPIRED and "EXCHANGE_FORGOT" in forgotten.expire_reason

    spent = sum((D(o.filled_quote_quantity) for o in [before, *after]), D(0))
    deadline = time.monotonic() + 30
    with grpc.insecure_channel(env["USER_SERVICE_ADDR"]) as user_channel:
        users = user_service_pb2_grpc.UserServiceStub(user_channel)
        while True:
            balances = users.GetBalances(user_service_pb2.GetBalancesRequest(user_id=user_id), metadata=admin)
            usdt = next(b for b in balances.balances if b.asset == "USDT")
            if (D(usdt.available), D(usdt.locked)) == (D("10000") - spent, D(0)):
                break
            assert time.monotonic() < deadline, f"balances never settled: {balances}"
            time.sleep(0.2)
    launcher.stop()


def test_a_restarted_make_run_accepts_the_admin_token_it_printed_before(launcher: Launcher, tmp_path: Path) -> None:
    env = launcher.env
    del env["TRADING_ADMIN_TOKEN"], env["TRADING_SERVICE_TOKEN"]
    env["TRADING_VAR_DIR"] = str(tmp_path / "state")
    printed = []
    for _ in range(2):
        launcher.start_capturing()
        token = launcher.banner_value("export ADMIN=")
        printed.append(token)
        admin = (("authorization", f"Bearer {token}"),)
        with grpc.insecure_channel(env["USER_SERVICE_ADDR"]) as channel:
            users = user_service_pb2_grpc.UserServiceStub(channel)
            listed = users.ListUsers(user_service_pb2.ListUsersRequest(), metadata=admin, timeout=10)
            assert listed is not None
        launcher.stop()
    assert printed[0] == printed[1], "the exported token survives a restart"
    kept = tmp_path / "state" / "dev-tokens.env"
    assert kept.exists() and oct(kept.stat().st_mode & 0o777) == "0o600"
