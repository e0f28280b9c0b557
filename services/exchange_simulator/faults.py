"""Faults armed by ``POST /sim/v1/faults``: the next N matching requests fail or are slow, before or after acting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ACTIONS = ("http_503", "error_1007", "delay", "drop_ws", "clear")
ENDPOINTS = ("order.new", "order.cancel", "order.query", "any")
WHENS = ("before", "after")


@dataclass
class Fault:
    """One armed fault; ``remaining`` counts down with every request it hits."""

    action: str
    endpoint: str = "order.new"
    when: str = "after"
    remaining: int = 1
    delay_ms: int = 0

    def describe(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "endpoint": self.endpoint,
            "when": self.when,
            "count": self.remaining,
            "delay_ms": self.delay_ms,
        }


class Faults:
    """The armed faults, oldest first."""

    def __init__(self) -> None:
        self.pending: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.pending.append(fault)

    def clear(self) -> None:
        self.pending.clear()

    def take(self, endpoint: str) -> Fault | None:
        """The first armed fault for ``endpoint`` (or for any endpoint), counted down; None if there is none."""
        if not self.pending:
            return None
        for fault in self.pending:
            if fault.endpoint in (endpoint, "any"):
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self.pending.remove(fault)
                return fault
        return None

    def describe(self) -> list[dict[str, Any]]:
        return [fault.describe() for fault in self.pending]
