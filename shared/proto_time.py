"""``google.protobuf.Timestamp`` to and from Unix milliseconds, for the proto converters at the API edge.

Kept apart from ``shared.timeutil`` so that domain code, which reads the clock and formats times,
imports no protobuf.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


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
