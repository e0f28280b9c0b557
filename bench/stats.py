"""Latency percentiles from raw samples (kept in full: a run holds at most a few hundred thousand)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class KeepUp:
    """When a saturation step kept up: at least ``ratio`` of its offered rate achieved, at most
    ``max_error_rate`` errors and a p95 of at most ``max_p95_ms``. The first step that does not ends
    the steps (bench.load for the stack, bench.floor for the design floor)."""

    ratio: float = 0.9
    max_error_rate: float = 0.01
    max_p95_ms: float = 1000.0

    def why_not(self, step: dict[str, Any]) -> str | None:
        """Why ``step`` did not keep up, or None if it did."""
        rate = step["target_rps"]
        if step["error_rate"] > self.max_error_rate:
            return f"error rate {step['error_rate']:.2%} > {self.max_error_rate:.0%} at {rate:.0f}/s"
        if step["achieved_rps"] < self.ratio * rate:
            return f"achieved {step['achieved_rps']:.0f}/s < {self.ratio:.0%} of offered {rate:.0f}/s"
        if step["p95_ms"] is None or step["p95_ms"] > self.max_p95_ms:
            return f"p95 {step['p95_ms']} ms > {self.max_p95_ms:.0f} ms at {rate:.0f}/s"
        return None


class SaturationCurve:
    """The saturation steps run so far: the best one (errors within bounds), the best that kept up,
    and why the steps ended."""

    def __init__(self, rule: KeepUp) -> None:
        self.rule = rule
        self.curve: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.sustainable: dict[str, Any] | None = None
        self.stop_reason = "all steps done"

    def add(self, step: dict[str, Any]) -> bool:
        """Record ``step``; whether the next step should run."""
        self.curve.append(step)
        if step["error_rate"] <= self.rule.max_error_rate and _better(step, self.best):
            self.best = step
        reason = self.rule.why_not(step)
        if reason is None:
            if _better(step, self.sustainable):
                self.sustainable = step
            return True
        self.stop_reason = reason
        return False

    def result(self) -> dict[str, Any]:
        """``best``, ``sustainable``, ``curve`` (every step) and ``stop_reason``."""
        return {
            "best": self.best,
            "sustainable": self.sustainable,
            "curve": self.curve,
            "stop_reason": self.stop_reason,
        }


def _better(step: dict[str, Any], than: dict[str, Any] | None) -> bool:
    return than is None or step["achieved_rps"] > than["achieved_rps"]
