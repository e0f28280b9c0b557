"""docker-compose.yml runs TLS: checked on the file as Compose resolves it (no Docker engine runs here)."""

import json
import os
import subprocess
from pathlib import Path

import compose
import pytest

from shared.tls import is_loopback

ROOT = Path(__file__).resolve().parents[3]
BINARY = Path(compose.__file__).parent / "docker-compose"
GRPC_SERVICES = {
    "order-service": "ORDER_SERVICE_ADDR",
    "user-service": "USER_SERVICE_ADDR",
    "exchange-gateway": "EXCHANGE_GATEWAY_ADDR",
}


@pytest.fixture(scope="module")
def resolved() -> dict:
    result = subprocess.run(
        [str(BINARY), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "TRADING_ADMIN_TOKEN": "adm_test", "TRADING_SERVICE_TOKEN": "svc_test"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["services"]


@pytest.mark.parametrize("name", list(GRPC_SERVICES))
def test_every_grpc_service_listens_off_loopback_with_the_certificates_of_the_tls_volume(resolved, name):
    service = resolved[name]
    # Off loopback a service refuses plaintext, so these addresses work only with TLS.
    assert not is_loopback(service["environment"][GRPC_SERVICES[name]])
    assert service["environment"]["TRADING_TLS_DIR"] == "/tls"
    assert "TRADING_ALLOW_PLAINTEXT" not in service["environment"]
    mounts = {(v["source"], v["target"]): v.get("read_only", False) for v in service["volumes"]}
    assert mounts[("tls", "/tls")] is True
    assert service["depends_on"]["tls-certs"]["condition"] == "service_completed_successfully"


def test_the_internal_mutual_tls_ports_are_not_published(resolved):
    published = {p["target"] for service in resolved.values() for p in service.get("ports", [])}
    assert not published & {50062, 50063}


def test_the_certificate_job_runs_the_make_certs_module_into_the_tls_volume_as_the_services_image(resolved):
    job = resolved["tls-certs"]
    assert job["image"] == resolved["order-service"]["image"]
    assert job["command"][:3] == ["python", "-m", "launcher.certs"]
    assert (ROOT / "launcher" / "certs.py").exists()
    targets = {v["target"]: v for v in job["volumes"]}
    assert targets[job["command"][3]]["source"] == "tls"
    assert targets["/app/launcher"]["read_only"] is True
