"""bench.floor against its four real stand-in processes: every placement answered, every event seen,
and with --db exactly the commits the module says each hop makes (the floor is only a floor if it
does that much)."""

import json
import signal
import sqlite3
import subprocess
from contextlib import ExitStack

import pytest

from tests.support import PYTHON, ROOT

pytestmark = [pytest.mark.e2e]

PLACEMENTS = 40


def _start(stack: ExitStack, *args: str) -> tuple[subprocess.Popen, str]:
    """Start a stand-in on port 0; the process and the address it reported on its "ready PORT" line."""
    process = subprocess.Popen(
        [PYTHON, "-m", "bench.floor", "serve", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )

    def stop() -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    stack.callback(stop)
    word, _, port = process.stdout.readline().decode().strip().partition(" ")
    assert word == "ready" and port.isdigit(), process.stderr.read().decode()[-2000:]
    return process, f"127.0.0.1:{port}"


def _run_floor(tmp_path, durable: bool) -> tuple[dict, list[subprocess.Popen]]:
    def db(role: str) -> list[str]:
        return ["--db", str(tmp_path / f"{role}.db")] if durable else []

    with ExitStack() as stack:
        # Each on port 0, after the ones it calls, given the addresses they reported.
        started = {"exchange": _start(stack, "exchange", "--port", "0")}
        started["user"] = _start(stack, "user", "--port", "0", *db("user"))
        started["gateway"] = _start(
            stack, "gateway", "--port", "0", "--exchange", started["exchange"][1], *db("gateway")
        )
        started["order"] = _start(
            stack,
            *("order", "--port", "0"),
            *("--user", started["user"][1], "--gateway", started["gateway"][1], *db("order")),
        )
        servers = [process for process, _ in started.values()]
        addr = {role: address for role, (_, address) in started.items()}
        drive = subprocess.run(
            [
                *(PYTHON, "-m", "bench.floor", "drive", "--target", addr["order"], "--rate", str(PLACEMENTS)),
                *("--duration", "1", "--warmup", "0", "--steps", "60", "--step-s", "0.5"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert drive.returncode == 0, drive.stderr[-3000:]
    events = [json.loads(line) for line in drive.stdout.splitlines()]
    assert [e["event"] for e in events] == ["start", "end", "start", "end", "result"]
    return events[-1], servers


@pytest.mark.parametrize("durable", [False, True], ids=["transport", "durable"])
def test_every_placement_is_answered_and_its_event_reaches_the_watcher(tmp_path, durable):
    result, servers = _run_floor(tmp_path, durable)
    fixed = result["fixed"]
    assert fixed["sent"] == fixed["ok"] == PLACEMENTS
    assert fixed["errors"] == 0
    assert fixed["event_latency"]["count"] == PLACEMENTS and fixed["events_missing"] == 0
    assert 0 < fixed["p50_ms"] <= fixed["p95_ms"] <= fixed["max_ms"]
    step = result["saturation"]["curve"][0]
    assert step["name"] == "sat-60" and step["ok"] == step["sent"] == 30
    assert result["saturation"]["best"] == result["saturation"]["sustainable"] == step
    assert result["saturation"]["stop_reason"] == "all steps done"
    assert [s.returncode for s in servers] == [0, 0, 0, 0]  # SIGTERM: a clean stop
    databases = sorted(p.name for p in tmp_path.glob("*.db"))
    assert databases == (["gateway.db", "order.db", "user.db"] if durable else [])


def test_with_a_database_each_hop_commits_what_the_module_says(tmp_path):
    result, _ = _run_floor(tmp_path, durable=True)
    placements = result["fixed"]["ok"] + result["saturation"]["curve"][0]["ok"]
    assert placements == PLACEMENTS + 30

    def rows(role: str) -> int:
        with sqlite3.connect(tmp_path / f"{role}.db") as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            return conn.execute("SELECT count(*) FROM rows").fetchone()[0]

    assert rows("user") == placements  # Reserve
    # before the POST, the answer (deferred), the event's own write (which carries the deferred answer)
    assert rows("gateway") == 3 * placements
    assert rows("order") == 3 * placements  # with Reserve, the answer after the reply (deferred), each event
