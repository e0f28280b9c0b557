"""The ready file: how a process started on port 0 says which ports it got.

A process started with ``TRADING_READY_FILE=path`` writes one JSON object to ``path`` once every
listener is bound and serving, for example ``{"service": "user_service", "pid": 4242, "grpc_port":
40123, "metrics_port": 40124}`` (a port it does not serve is left out). The file appears whole: it is
written beside ``path`` and renamed. A harness that starts processes (the tests, the launcher when its
addresses use port 0) lets each bind port 0 and reads the ports here, instead of picking a free port
and hoping nothing takes it before the process binds it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

READY_FILE = "TRADING_READY_FILE"


def announce_ready(service: str, fields: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
    """Write the ready file named by ``TRADING_READY_FILE`` (if it is set): ``fields`` but those that are None."""
    env = os.environ if env is None else env
    path = env.get(READY_FILE, "")
    if not path:
        return
    record = {"service": service, "pid": os.getpid(), **{k: v for k, v in fields.items() if v is not None}}
    partial = Path(f"{path}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record) + "\n")
    os.replace(partial, path)


def read_ready(path: Path) -> dict[str, Any] | None:
    """The record in the ready file at ``path``, or None while there is none."""
    try:
        record: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return record


class NotReady(Exception):
    """The process exited, or the time ran out, before its ready file appeared."""


def wait_ready(path: Path, exited: Callable[[], int | None], timeout: float) -> dict[str, Any]:
    """Poll for the ready file at ``path`` and return its record.

    ``exited`` returns the process's exit code once it has ended (``Popen.poll``), so that a process
    that failed to start is reported at once rather than after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        record = read_ready(path)
        if record is not None:
            return record
        code = exited()
        if code is not None:
            raise NotReady(f"exited with code {code} before it was ready")
        if time.monotonic() > deadline:
            raise NotReady(f"not ready within {timeout:.0f} s")
        time.sleep(0.05)
