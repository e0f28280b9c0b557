"""``python -m services.exchange_simulator`` as `make run` starts it: shows its port, stops cleanly, fails clearly."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def start(port: int, **env: str) -> subprocess.Popen[str]:
    environment = {**os.environ, "SIM_PORT": str(port), "SIM_HOST": "127.0.0.1", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "services.exchange_simulator"],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_announces_its_port_serves_and_exits_0_on_sigterm() -> None:
    process = start(0, BINANCE_API_SECRET="process-test-secret-value")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"port=(\d+)", line)
        assert match, line
        port = int(match.group(1))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v3/ping", timeout=5) as response:
            assert response.status == 200 and response.read() == b"{}"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None
        assert "process-test-secret-value" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_port_in_use_exits_non_zero_naming_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start(port)
        _, stderr = process.communicate(timeout=20)
    assert process.returncode != 0
    assert str(port) in stderr and "address already in use" in stderr
