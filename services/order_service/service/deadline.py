"""Deadlines handed down from the caller: Python gRPC does not propagate them, so the use cases do."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Deadline:
    """An absolute point on the monotonic clock by which the caller wants an answer (None: no deadline)."""

    at: float | None = None

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """A deadline ``seconds`` from now (None: none)."""
        return cls(None if seconds is None else time.monotonic() + seconds)

    def left(self, default: float, *, floor: float = 0.05) -> float:
        """Seconds to give a downstream call: what is left of the deadline, at most ``default``."""
        if self.at is None:
            return default
        return max(floor, min(default, self.at - time.monotonic()))
