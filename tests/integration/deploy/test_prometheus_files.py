"""deploy/prometheus.yml and deploy/alerts.yml: accepted by promtool, alerts that fire on the series they
watch (promtool's own rule tests), and every metric they name is one the services export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool")
HERE = Path(__file__).resolve().parent

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus; .ci/run does it)"
)


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@needs_promtool
def test_promtool_accepts_the_scrape_config_and_the_rule_file_it_loads():
    result = promtool("check", "config", str(DEPLOY / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


@needs_promtool
def test_promtool_accepts_the_alert_rules():
    result = promtool("check", "rules", str(DEPLOY / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_promtool_refuses_a_rule_with_a_broken_expression(tmp_path: Path):
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    rules["groups"][0]["rules"][0]["expr"] = "up{job= == 0"
    broken = tmp_path / "alerts.yml"
    broken.write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", str(broken))
    assert result.returncode != 0


@needs_promtool
def test_the_alerts_fire_on_the_series_they_watch_and_only_then():
    result = promtool("test", "rules", "alerts_test.yml", cwd=HERE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_scrape_config_scrapes_the_three_services_on_their_default_metrics_addresses():
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {
        "order_service": ["127.0.0.1:9101"],
        "user_service": ["127.0.0.1:9102"],
        "exchange_gateway": ["127.0.0.1:9103"],
    }
    from shared.metrics import DEFAULT_METRICS_ADDRS

    assert sorted(t[0] for t in targets.values()) == sorted(DEFAULT_METRICS_ADDRS.values())
    assert config["rule_files"] == ["alerts.yml"]


def test_the_alerts_cover_what_an_operator_must_hear_about():
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    names = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    assert {
        "TradingServiceDown",
        "ExchangeRateLimited",
        "ExchangeBanned",
        "UnknownOutcomeOlderThanAMinute",
        "ExecutionLagHigh",
        "ParkedEffects",
        "ReconciliationShortfall",
    } <= names
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]


def test_every_metric_the_alerts_use_is_exported_by_the_code():
    rules = (DEPLOY / "alerts.yml").read_text()
    used = set(re.findall(r"\b((?:trading|grpc)_[a-z_]+)", rules))
    source = "\n".join(p.read_text() for d in ("shared", "services") for p in (ROOT / d).rglob("*.py"))
    for name in sorted(used):
        base = re.sub(r"_(bucket|count|sum|total)$", "", name)
        if base.startswith(("grpc_server_", "grpc_client_")):
            # One family per side, named f"{prefix}_handled_total" and so on (shared/metrics.py).
            base = "{prefix}_" + base.split("_", 2)[2]
        assert f'"{base}' in source, f"{name} is used by an alert but no code exports {base}"
