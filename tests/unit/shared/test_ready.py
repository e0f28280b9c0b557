"""The ready file: written whole, only when asked for, and read by a harness that notices a dead process."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from shared.ready import READY_FILE, NotReady, announce_ready, read_ready, wait_ready


def test_the_record_names_the_service_and_its_pid_and_leaves_out_ports_it_does_not_serve(tmp_path: Path):
    path = tmp_path / "ready.json"
    announce_ready("user_service", {"grpc_port": 40123, "metrics_port": None}, env={READY_FILE: str(path)})
    assert json.loads(path.read_text()) == {"service": "user_service", "pid": os.getpid(), "grpc_port": 40123}
    assert list(tmp_path.iterdir()) == [path], "the partial file was renamed into place"


def test_without_the_variable_nothing_is_written(tmp_path: Path):
    announce_ready("order_service", {"grpc_port": 40123}, env={})
    assert list(tmp_path.iterdir()) == []


def test_a_harness_reads_the_record_and_hears_at_once_of_a_process_that_exited(tmp_path: Path):
    path = tmp_path / "ready.json"
    assert read_ready(path) is None
    with pytest.raises(NotReady, match="exited with code 2"):
        wait_ready(path, lambda: 2, timeout=60)
    announce_ready("exchange_simulator", {"http_port": 8765}, env={READY_FILE: str(path)})
    assert wait_ready(path, lambda: None, timeout=60)["http_port"] == 8765
