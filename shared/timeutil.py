"""Time helpers: Unix milliseconds from the clock, ISO-8601 UTC text (``shared.proto_time`` converts to the wire)."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def now_ms() -> int:
    """Current Unix time in milliseconds."""
    return time.time_ns() // 1_000_000


def iso_from_ms(ms: int) -> str:
    """ISO-8601 UTC text of a Unix time in milliseconds."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat().replace("+00:00", "Z")
