"""bench.cli._await_ready: a helper process that never says "ready" fails the run with its name
instead of hanging it."""

import subprocess
import sys

import pytest

from bench.cli import _await_ready


def _spawn(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)


def test_ready_with_its_port_on_the_first_line_passes_and_gives_the_port():
    process = _spawn("print('ready 43127', flush=True)")
    try:
        assert _await_ready(process, "the stand-in", timeout=20) == 43127
    finally:
        process.wait(timeout=10)


def test_ready_without_a_port_is_an_error():
    process = _spawn("print('ready', flush=True)")
    process.wait(timeout=10)
    with pytest.raises(RuntimeError, match="the stand-in did not start"):
        _await_ready(process, "the stand-in", timeout=5)


def test_silence_past_the_timeout_is_an_error_naming_the_process():
    process = _spawn("import time; time.sleep(30)")
    try:
        with pytest.raises(RuntimeError, match="the stand-in did not start within 1 s"):
            _await_ready(process, "the stand-in", timeout=1)
    finally:
        process.kill()
        process.wait()


def test_exiting_without_ready_is_an_error_with_the_exit_code():
    process = _spawn("import sys; print('boom', flush=True); sys.exit(3)")
    process.wait(timeout=10)
    with pytest.raises(RuntimeError, match=r"the stand-in did not start \(exit code 3\)"):
        _await_ready(process, "the stand-in", timeout=5)
