"""docker-compose.yml runs Prometheus with deploy/prometheus.yml and deploy/alerts.yml as they are: each
service serves /metrics on the port the scrape config names and publishes it on 127.0.0.1, where the
Prometheus container (on the host's network) finds it."""

from __future__ import annotations

import yaml

from tests.support import ROOT

JOBS = {"order_service": "order-service", "user_service": "user-service", "exchange_gateway": "exchange-gateway"}
VARIABLES = {"order-service": "ORDER_METRICS_ADDR", "user-service": "USER_METRICS_ADDR",
             "exchange-gateway": "GATEWAY_METRICS_ADDR"}  # fmt: skip


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_prometheus_service_mounts_the_deploy_files_where_its_config_expects_them():
    prometheus = _compose()["services"]["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert prometheus["network_mode"] == "host"
    mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in prometheus["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == "./deploy/prometheus.yml"
    assert mounts["/etc/prometheus/alerts.yml"] == "./deploy/alerts.yml"  # rule_files: alerts.yml, beside it
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    for mounted in ("prometheus.yml", "alerts.yml"):
        assert (ROOT / "deploy" / mounted).exists()


def test_each_service_serves_and_publishes_metrics_on_the_port_the_scrape_config_names():
    services = _compose()["services"]
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    for job in scrape["scrape_configs"]:
        [target] = job["static_configs"][0]["targets"]
        host, port = target.rsplit(":", 1)
        service = services[JOBS[job["job_name"]]]
        assert service["environment"][VARIABLES[JOBS[job["job_name"]]]] == f"0.0.0.0:{port}"
        assert f"{host}:{port}:{port}" in service["ports"], job["job_name"]
