"""The order state machine: internal states, their public status, and the explicit (from, to) table.

Modelled on nautilus_trader's ``_ORDER_STATE_TABLE``: a transition that is not in ``TRANSITIONS``
is refused. The internal states are finer than the public ones so that a restart knows exactly
which step an order had reached:

    PLACING          persisted first; the reservation and the submission are under way (or were
                     interrupted): either, both or neither may have happened
    SUBMIT_UNKNOWN   submitted, but the gateway (or the network) could not say whether the exchange has it
    NEW              accepted by the exchange, nothing filled
    PARTIALLY_FILLED part filled, still working
    FILLED, CANCELLED, REJECTED, EXPIRED   final

The real races are allowed on purpose: an execution may arrive from the stream before the
SubmitOrder response is recorded (PLACING -> PARTIALLY_FILLED/FILLED/...), a trade may arrive
after a cancel was requested (the cancel request is a flag, not a state, so trades keep applying),
and a stop-limit may be rejected after it was accepted (NEW -> REJECTED).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """The six public statuses of ``trading.order.v1.OrderStatus``."""

    PENDING = "PENDING"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


class State(StrEnum):
    """Internal states (stored)."""

    PLACING = "PLACING"
    SUBMIT_UNKNOWN = "SUBMIT_UNKNOWN"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


PUBLIC_STATUS: dict[State, Status] = {
    State.PLACING: Status.PENDING,
    State.SUBMIT_UNKNOWN: Status.PENDING,
    State.NEW: Status.PENDING,
    State.PARTIALLY_FILLED: Status.PARTIALLY_FILLED,
    State.FILLED: Status.FILLED,
    State.CANCELLED: Status.CANCELLED,
    State.REJECTED: Status.REJECTED,
    State.EXPIRED: Status.EXPIRED,
}

FINAL_STATES = frozenset({State.FILLED, State.CANCELLED, State.REJECTED, State.EXPIRED})
ACTIVE_STATES = frozenset(set(State) - FINAL_STATES)
IN_FLIGHT_STATES = frozenset({State.PLACING, State.SUBMIT_UNKNOWN})
"""States in which the exchange may not know the order yet."""
CANCELLABLE_STATUSES = frozenset({Status.PENDING, Status.PARTIALLY_FILLED})

_S = State
TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        # The submission's answer, the stream overtaking it, or giving up on an order never sent.
        (_S.PLACING, _S.SUBMIT_UNKNOWN),
        (_S.PLACING, _S.NEW),
        (_S.PLACING, _S.PARTIALLY_FILLED),
        (_S.PLACING, _S.FILLED),
        (_S.PLACING, _S.CANCELLED),
        (_S.PLACING, _S.REJECTED),
        (_S.PLACING, _S.EXPIRED),
        # An unknown outcome resolves to anything the exchange can report.
        (_S.SUBMIT_UNKNOWN, _S.NEW),
        (_S.SUBMIT_UNKNOWN, _S.PARTIALLY_FILLED),
        (_S.SUBMIT_UNKNOWN, _S.FILLED),
        (_S.SUBMIT_UNKNOWN, _S.CANCELLED),
        (_S.SUBMIT_UNKNOWN, _S.REJECTED),
        (_S.SUBMIT_UNKNOWN, _S.EXPIRED),
        # Working.
        (_S.NEW, _S.PARTIALLY_FILLED),
        (_S.NEW, _S.FILLED),
        (_S.NEW, _S.CANCELLED),
        (_S.NEW, _S.EXPIRED),
        (_S.NEW, _S.REJECTED),  # a triggered stop-limit can still be refused
        (_S.PARTIALLY_FILLED, _S.PARTIALLY_FILLED),
        (_S.PARTIALLY_FILLED, _S.FILLED),
        (_S.PARTIALLY_FILLED, _S.CANCELLED),
        (_S.PARTIALLY_FILLED, _S.EXPIRED),
    }
)


class InvalidTransition(Exception):
    """A (from, to) pair that is not in the table."""

    def __init__(self, current: State, target: State):
        super().__init__(f"order cannot go from {current} to {target}")
        self.current = current
        self.target = target


def can_transition(current: State, target: State) -> bool:
    """Whether the table allows ``current`` -> ``target``."""
    return (current, target) in TRANSITIONS


def check_transition(current: State, target: State) -> None:
    """Raise InvalidTransition unless the table allows ``current`` -> ``target``."""
    if (current, target) not in TRANSITIONS:
        raise InvalidTransition(current, target)
