"""Operability over the real processes: each service's /metrics after one placement, one fill and one cancel,
and the real Prometheus server scraping the three of them with deploy/prometheus.yml and deploy/alerts.yml."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ROOT, OutputCollector
from trading.order.v1 import order_pb2, order_service_pb2
from trading.user.v1 import user_service_pb2

from .conftest import ProcessStack, StackClients

pytestmark = pytest.mark.e2e

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
PROMETHEUS = shutil.which("prometheus")


def scrape(stack: ProcessStack, service: str) -> tuple[str, Samples]:
    """The service's /metrics text, and its samples parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(stack.metrics_url(service), timeout=5) as response:  # noqa: S310 - loopback
        assert response.status == 200
        text = response.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much one series moved between two scrapes."""
    key = (name, tuple(sorted(labels.items())))
    assert key in after, f"{name}{labels} is not exported"
    return after[key] - before.get(key, 0.0)


def rpc(service: str, method: str, code: str = "OK", grpc_type: str = "unary") -> dict[str, str]:
    return {"grpc_service": service, "grpc_method": method, "grpc_code": code, "grpc_type": grpc_type}


ORDERS = "trading.order.v1.OrderService"
USERS = "trading.user.v1.UserService"
GATEWAY = "trading.gateway.v1.ExchangeGateway"


async def _poll(check: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


async def test_one_placement_fill_and_cancel_move_each_services_counters_by_exactly_that(
    processes: ProcessStack,
):
    clients = StackClients(processes)
    try:
        await clients.price("50000.00")
        created = await clients.users.CreateUser(
            user_service_pb2.CreateUserRequest(username="metricsuser", email="metrics@example.com"),
            metadata=clients.admin,
        )
        user_id = created.user.user_id
        await clients.users.Deposit(
            user_service_pb2.DepositRequest(user_id=user_id, asset="USDT", amount="5000", request_id="metrics-dep"),
            metadata=clients.admin,
        )
        key = await clients.users.CreateApiKey(
            user_service_pb2.CreateApiKeyRequest(user_id=user_id, label="metrics"), metadata=clients.admin
        )
        auth = (("authorization", f"Bearer {key.api_key}"),)
        before = {name: scrape(processes, name)[1] for name in ("order_service", "user_service", "exchange_gateway")}

        # One placement: a LIMIT BUY of 0.02 at 48,000, resting below the market.
        placed = await clients.orders.PlaceOrder(
            order_service_pb2.PlaceOrderRequest(
                symbol="BTCUSDT",
                side=order_pb2.ORDER_SIDE_BUY,
                type=order_pb2.ORDER_TYPE_LIMIT,
                quantity="0.02",
                price="48000.00",
            ),
            metadata=auth,
        )
        order_id = placed.order.order_id

        # One fill: the market reaches 48,000 with 0.005 to trade; it is settled in the ledger.
        await clients.price("48000.00", volume="0.005")

        async def settled() -> bool:
            balances = await clients.user_balances(user_id)
            return balances.get("BTC", (Decimal(0), Decimal(0)))[0] > 0

        await _poll(settled, what="the fill's settlement")

        # One cancel: the rest is released. Its DELETE is weighed in the current calendar minute.
        cancelled_at = time.time()
        await clients.orders.CancelOrder(order_service_pb2.CancelOrderRequest(order_id=order_id), metadata=auth)

        async def released() -> bool:
            return (await clients.user_balances(user_id))["USDT"][1] == 0

        await _poll(released, what="the release of the rest")
        await clients.price("50000.00")

        async def ended() -> Samples | None:
            samples = scrape(processes, "order_service")[1]
            done = moved(before["order_service"], samples, "trading_orders_ended_total", status="CANCELLED")
            return samples if done else None

        order = await _poll(ended, what="the cancelled order to be counted")
        users = scrape(processes, "user_service")[1]
        gateway = scrape(processes, "exchange_gateway")[1]
        scraped_at = time.time()
    finally:
        await clients.close()

    o, u, g = before["order_service"], before["user_service"], before["exchange_gateway"]
    # order service: the calls it served, the calls it made, and what an operator watches
    assert moved(o, order, "grpc_server_handled_total", **rpc(ORDERS, "PlaceOrder")) == 1
    assert moved(o, order, "grpc_server_handled_total", **rpc(ORDERS, "CancelOrder")) == 1
    place = {"grpc_service": ORDERS, "grpc_method": "PlaceOrder", "grpc_type": "unary"}
    assert moved(o, order, "grpc_server_started_total", **place) == 1
    assert moved(o, order, "grpc_server_handling_seconds_count", **place) == 1
    assert moved(o, order, "grpc_client_handled_total", **rpc(USERS, "ReserveFunds")) == 1
    assert moved(o, order, "grpc_client_handled_total", **rpc(USERS, "SettleTrade")) == 1
    assert moved(o, order, "grpc_client_handled_total", **rpc(USERS, "ReleaseFunds")) == 1
    assert moved(o, order, "grpc_client_handled_total", **rpc(GATEWAY, "SubmitOrder")) == 1
    assert moved(o, order, "grpc_client_handled_total", **rpc(GATEWAY, "CancelOrder")) == 1
    assert moved(o, order, "trading_orders_placed_total", type="LIMIT", side="BUY") == 1
    assert moved(o, order, "trading_orders_placed_total", type="MARKET", side="BUY") == 0
    assert moved(o, order, "trading_orders_ended_total", status="CANCELLED") == 1
    assert moved(o, order, "trading_orders_ended_total", status="FILLED") == 0
    assert moved(o, order, "trading_fills_total") == 1
    assert moved(o, order, "trading_order_submit_seconds_count") == 1
    assert moved(o, order, "trading_execution_lag_seconds_count") == 1
    assert order[("trading_outbox_backlog", ())] == 0
    assert order[("trading_parked_effects", ())] == 0
    assert order[("trading_ready", ())] == 1
    assert moved(o, order, "trading_db_transactions_total", outcome="committed") >= 4
    # user service: the reservation, the settlement and the release it booked
    assert moved(u, users, "grpc_server_handled_total", **rpc(USERS, "ReserveFunds")) == 1
    assert moved(u, users, "grpc_server_handled_total", **rpc(USERS, "SettleTrade")) == 1
    assert moved(u, users, "grpc_server_handled_total", **rpc(USERS, "ReleaseFunds")) == 1
    assert moved(u, users, "trading_db_commit_seconds_count") >= 3
    # gateway: one submission, one cancel, each one HTTP request to the exchange
    assert moved(g, gateway, "grpc_server_handled_total", **rpc(GATEWAY, "SubmitOrder")) == 1
    assert moved(g, gateway, "grpc_server_handled_total", **rpc(GATEWAY, "CancelOrder")) == 1
    assert moved(g, gateway, "trading_exchange_requests_total", endpoint="POST /api/v3/order", code="200") == 1
    assert moved(g, gateway, "trading_exchange_requests_total", endpoint="DELETE /api/v3/order", code="200") == 1
    _assert_gateway_state(gateway, cancelled_at, scraped_at)


def _assert_gateway_state(gateway: Samples, sent_at: float, scraped_at: float) -> None:
    """The gateway's gauges once the order has ended: stream up, nothing unknown, limits known and counted.

    The 1m request-weight gauge counts the current calendar minute only: when a minute began between
    the last request and the scrape (one second of margin for the clocks), the window is new and may
    rightly be 0.
    """
    assert gateway[("trading_exchange_ws_connected", ())] == 1
    assert gateway[("trading_exchange_unknown_outcomes", ())] == 0
    assert gateway[("trading_exchange_limit", (("interval", "10s"), ("limit", "ORDERS")))] > 0
    assert gateway[("trading_ready", ())] == 1
    used = gateway[("trading_exchange_limit_used", (("interval", "1m"), ("limit", "REQUEST_WEIGHT")))]
    if (sent_at - 1) // 60 == (scraped_at + 1) // 60:
        assert used > 0
    else:
        assert used >= 0


def test_no_token_key_or_user_identifier_appears_in_any_metric(processes: ProcessStack):
    secrets = [processes.env["TRADING_ADMIN_TOKEN"], processes.env["TRADING_SERVICE_TOKEN"]]
    for service in ("order_service", "user_service", "exchange_gateway"):
        text, _ = scrape(processes, service)
        for secret in secrets:
            assert secret not in text, service
        assert "usr_" not in text and "ord_" not in text and "tk_" not in text, service
        assert "signature" not in text and "apiKey" not in text, service


@pytest.mark.skipif(PROMETHEUS is None, reason="the prometheus server is not installed (.ci/run installs it)")
def test_the_real_prometheus_server_scrapes_all_three_services_with_the_deploy_config(
    processes: ProcessStack, tmp_path: Path
):
    if processes.env["ORDER_DB_URL"].startswith("postgresql"):
        pytest.skip("the scrape does not depend on the database: run once, on the SQLite stack")
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["scrape_timeout"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(ROOT / "deploy" / "alerts.yml")]
    for job in config["scrape_configs"]:
        job["static_configs"][0]["targets"] = [processes.metrics_url(job["job_name"]).split("/")[2]]
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            "--web.listen-address=127.0.0.1:0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    log = OutputCollector(process.stderr)

    def api(path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"http://{web}/api/v1/{path}{query}", timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def eventually(check: Any, what: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = check()
            except OSError:
                value = None
            if value:
                return value
            assert process.poll() is None, log.text[-3000:]
            assert time.monotonic() < deadline, f"timed out waiting for {what}\n{log.text[-3000:]}"
            time.sleep(0.25)

    try:
        # Prometheus logs the address it bound: 'msg="Listening on" address=127.0.0.1:41234'.
        assert log.wait_for('msg="Listening on"', timeout=60), log.text[-3000:]
        web = re.findall(r'msg="Listening on" address=(\S+)', log.text)[0]

        def all_up() -> list[dict[str, Any]] | None:
            targets = api("targets")["activeTargets"]
            return targets if len(targets) == 3 and all(t["health"] == "up" for t in targets) else None

        targets = eventually(all_up, "the three targets to be up")
        assert {t["labels"]["job"] for t in targets} == {"order_service", "user_service", "exchange_gateway"}

        def answered() -> list[dict[str, Any]] | None:
            result = api("query", query="sum by (job) (trading_ready)")["result"]
            return result if len(result) == 3 else None

        ready = eventually(answered, "a query answer for every job")
        assert {r["metric"]["job"]: r["value"][1] for r in ready} == {
            "order_service": "1",
            "user_service": "1",
            "exchange_gateway": "1",
        }
        rules = api("rules")["groups"]
        loaded = {rule["name"] for group in rules for rule in group["rules"]}
        assert {"TradingServiceDown", "ReconciliationShortfall", "UnknownOutcomeOlderThanAMinute"} <= loaded
        assert all(rule["health"] != "err" for group in rules for rule in group["rules"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
