"""Time helpers: UTC datetimes in storage, google.protobuf.Timestamp on the wire."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def now_ms() -> int:
    """Current Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def ts_from_ms(ms: int | None) -> Timestamp | None:
    """Timestamp for a Unix time in milliseconds; None stays None."""
    if ms is None:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def ms_from_ts(ts: Timestamp | None) -> int | None:
    """Unix milliseconds of a Timestamp; an unset (zero) Timestamp gives None."""
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return None
    return int(ts.ToMilliseconds())


def iso_from_ms(ms: int) -> str:
    """ISO-8601 UTC text of a Unix time in milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
