"""Latency percentiles from raw samples (kept in full: a run holds at most a few hundred thousand)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

PERCENTILES = (50, 95, 99)


def latency_summary(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50/p95/p99, mean and max of latencies given in seconds, reported in milliseconds."""
    if len(seconds) == 0:
        return {"count": 0, "p50_ms": None, "p95_ms": None, "p99_ms": None, "mean_ms": None, "max_ms": None}
    values = np.asarray(seconds, dtype=np.float64) * 1000.0
    p50, p95, p99 = (float(x) for x in np.percentile(values, PERCENTILES))
    return {
        "count": len(values),
        "p50_ms": round(p50, 3),
        "p95_ms": round(p95, 3),
        "p99_ms": round(p99, 3),
        "mean_ms": round(float(values.mean()), 3),
        "max_ms": round(float(values.max()), 3),
    }


def quick_p95_ms(seconds: Sequence[float]) -> float | None:
    """The 95th percentile in milliseconds, or None without samples."""
    if len(seconds) == 0:
        return None
    return round(float(np.percentile(np.asarray(seconds, dtype=np.float64), 95)) * 1000.0, 3)
