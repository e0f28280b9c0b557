"""The exchange's clock as seen from here: local time plus an offset measured with GET /api/v3/time."""

from __future__ import annotations

import time
from collections.abc import Callable


def local_ms() -> float:
    """Local wall-clock time in milliseconds."""
    return time.time() * 1000.0


class ExchangeClock:
    """Local time plus ``offset_ms``; ``sample`` turns one /time round trip into an offset.

    The offset is taken at the midpoint of the round trip (the server stamped ``serverTime``
    somewhere in it), so its error is at most half the round-trip time. Of several samples the
    one with the shortest round trip is the most accurate.
    """

    def __init__(self, local: Callable[[], float] = local_ms):
        self.local = local
        self.offset_ms = 0.0

    def now(self) -> float:
        """Exchange time in milliseconds (float)."""
        return self.local() + self.offset_ms

    def now_ms(self) -> int:
        """Exchange time in whole milliseconds, for ``timestamp`` parameters."""
        return int(self.now())

    @staticmethod
    def sample(sent_ms: float, received_ms: float, server_ms: int) -> tuple[float, float]:
        """(offset, round trip) from one /time request sent and answered at the given local times."""
        rtt = max(0.0, received_ms - sent_ms)
        return server_ms - (sent_ms + received_ms) / 2.0, rtt

    def adopt(self, offset_ms: float) -> None:
        """Use a measured offset."""
        self.offset_ms = offset_ms
