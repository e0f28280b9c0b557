"""`python -m bench --quick` end to end against the real stack: the benchmark runs, reports and cleans up.

No timing assertions: these tests only check that the tool works and writes every figure it promises.
"""

import json
import re
import signal
import subprocess
import time
from numbers import Real

import pytest

from tests.support import PYTHON, ROOT, OutputCollector, pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PROCESSES = ("exchange_simulator", "user_service", "exchange_gateway", "order_service", "load_generator")


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _wait_gone(pids, timeout=15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if pid_alive(pid)]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("bench-results")
    done = subprocess.run(
        [PYTHON, "-m", "bench", "--quick", "--results-dir", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=110,
    )
    return done, results


def test_the_quick_run_completes_and_prints_the_table_and_verdicts(quick_run):
    done, _ = quick_run
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    out = done.stdout
    assert "LOG_LEVEL=WARNING" in out
    assert "Phase fixed" in out and "Phase sat-" in out
    assert re.search(r"fixed\s+t=\s*[\d.]+s offered", out), "no live progress line"
    assert "Targets:" in out
    assert re.search(r"durable\s+with each hop's durable commits: at 20/s p50 [\d.]+", out), "no design-floor line"
    assert re.search(r"Unloaded \(one request at a time, 10 placements", out), "no unloaded-latency line"
    assert re.search(r"single hops, same way: GetLastPrice p50 [\d.]+ p95 [\d.]+ ms, ReserveFunds", out)
    for target in (
        "trading core CPU per request",
        "p95 at 100 orders/s",
        "stack p95 / durable floor p95",
        "unloaded PlaceOrder p50",
        "saturation, end to end",
        "marketable order to FILLED",
        "all processes together",
    ):
        assert re.search(rf"(PASS|FAIL|N/A)\s+{re.escape(target)}", out), target


def test_the_json_has_every_figure_the_issue_asks_for(quick_run):
    done, results = quick_run
    assert done.returncode == 0, done.stdout[-4000:]
    result = json.loads((results / "quick.json").read_text())
    fixed = result["fixed_rate"]
    for key in ("target_rps", "achieved_rps", "p50_ms", "p95_ms", "p99_ms", "error_rate"):
        assert _number(fixed[key]), (key, fixed[key])
    assert fixed["achieved_rps"] > 0
    assert 0 <= fixed["error_rate"] <= 1
    assert fixed["p50_ms"] <= fixed["p95_ms"] <= fixed["p99_ms"]
    serial = result["serial"]
    assert serial["count"] == 10
    for rpc in ("PlaceOrder", "CancelOrder", "GetLastPrice", "ReserveFunds", "ReleaseFunds"):
        figures = serial[rpc]
        assert 0 < figures["count"] <= 10, (rpc, figures)
        assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["max_ms"], (rpc, figures)
    saturation = result["saturation"]
    assert _number(saturation["achieved_rps"]) and saturation["achieved_rps"] > 0
    assert _number(saturation["p95_ms"])
    assert 0 <= saturation["error_rate"] <= 1
    assert saturation["curve"], "the saturation curve is empty"
    assert _number(result["echo_rps"]) and result["echo_rps"] > 0
    assert _number(result["ratio_to_echo"]) and result["ratio_to_echo"] > 0
    assert _number(result["fill_latency_p95_ms"])
    per_request = result["cpu_ms_per_request"]["fixed"]
    core = sum(per_request[name] for name in ("order_service", "user_service", "exchange_gateway"))
    assert result["core_cpu_ms_per_request"] == round(core, 3) > 0
    assert set(PROCESSES) <= set(result["peak_rss_mb"])
    for name in PROCESSES:
        assert _number(result["peak_rss_mb"][name]) and result["peak_rss_mb"][name] > 0, name
    assert {"PlaceOrder", "CancelOrder"} <= set(fixed["rpcs"])
    assert result["ledger"]["users"] > 0 and isinstance(result["ledger"]["consistent"], bool)
    assert result["machine"]["cpu_count"] and result["machine"]["grpcio"]
    assert {v["status"] for v in result["targets"]} <= {"PASS", "FAIL", "N/A"}
    for variant in ("transport", "durable"):
        floor = result["floor"][variant]
        assert floor["fixed"]["ok"] == floor["fixed"]["sent"] > 0, (variant, floor["fixed"])
        assert floor["fixed"]["event_latency"]["count"] == floor["fixed"]["ok"], (variant, floor["fixed"])
        assert floor["fixed"]["events_missing"] == 0, (variant, floor["fixed"])
        assert _number(floor["fixed"]["cpu_ms_per_placement_stand_ins"]), variant
        assert floor["saturation"]["curve"], variant
    png = results / "quick.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_no_process_is_left_behind(quick_run):
    _, results = quick_run
    result = json.loads((results / "quick.json").read_text())
    assert set(result["pids"]) == set(PROCESSES)
    assert _wait_gone(result["pids"].values(), timeout=5) == []
    floor_pids = [pid for variant in result["floor"].values() for pid in variant["pids"].values()]
    assert len(floor_pids) == 10  # four stand-ins and a driver, twice
    assert _wait_gone(floor_pids, timeout=5) == []


def test_ctrl_c_stops_the_stack_and_the_load_process(tmp_path):
    process = subprocess.Popen(
        [PYTHON, "-m", "bench", "--quick", "--no-echo", "--duration", "30", "--results-dir", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    out = OutputCollector(process.stdout)
    try:
        assert out.wait_for("Phase fixed", timeout=90), out.text[-3000:]
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)", out.text)]
        assert len(pids) == 5, out.text  # four services and the load process
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, out.text[-3000:]
        assert _wait_gone(pids) == [], out.text[-3000:]
        assert "interrupted" in out.text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
