"""The transition table: exactly the allowed pairs, nothing else."""

from __future__ import annotations

import itertools

import pytest

from services.order_service.domain.states import (
    FINAL_STATES,
    PUBLIC_STATUS,
    TRANSITIONS,
    InvalidTransition,
    State,
    Status,
    can_transition,
    check_transition,
)

S = State
# Written out independently of the implementation: changing the table must change this test.
EXPECTED = {
    (S.PLACING, S.SUBMIT_UNKNOWN),
    (S.PLACING, S.NEW),
    (S.PLACING, S.PARTIALLY_FILLED),
    (S.PLACING, S.FILLED),
    (S.PLACING, S.CANCELLED),
    (S.PLACING, S.REJECTED),
    (S.PLACING, S.EXPIRED),
    (S.SUBMIT_UNKNOWN, S.NEW),
    (S.SUBMIT_UNKNOWN, S.PARTIALLY_FILLED),
    (S.SUBMIT_UNKNOWN, S.FILLED),
    (S.SUBMIT_UNKNOWN, S.CANCELLED),
    (S.SUBMIT_UNKNOWN, S.REJECTED),
    (S.SUBMIT_UNKNOWN, S.EXPIRED),
    (S.NEW, S.PARTIALLY_FILLED),
    (S.NEW, S.FILLED),
    (S.NEW, S.CANCELLED),
    (S.NEW, S.EXPIRED),
    (S.NEW, S.REJECTED),
    (S.PARTIALLY_FILLED, S.PARTIALLY_FILLED),
    (S.PARTIALLY_FILLED, S.FILLED),
    (S.PARTIALLY_FILLED, S.CANCELLED),
    (S.PARTIALLY_FILLED, S.EXPIRED),
}


@pytest.mark.parametrize(("current", "target"), list(itertools.product(State, State)))
def test_every_pair_is_allowed_exactly_when_listed(current: State, target: State) -> None:
    allowed = (current, target) in EXPECTED
    assert can_transition(current, target) is allowed
    if allowed:
        check_transition(current, target)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(current, target)


def test_the_table_is_the_expected_set() -> None:
    assert set(TRANSITIONS) == EXPECTED


@pytest.mark.parametrize("final", sorted(FINAL_STATES))
def test_nothing_leaves_a_final_state(final: State) -> None:
    assert not any(can_transition(final, target) for target in State)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PARTIALLY_FILLED, S.NEW),
        (S.PARTIALLY_FILLED, S.REJECTED),
        (S.NEW, S.PLACING),
        (S.SUBMIT_UNKNOWN, S.PLACING),
        (S.NEW, S.SUBMIT_UNKNOWN),
        (S.FILLED, S.CANCELLED),
        (S.CANCELLED, S.FILLED),
        (S.REJECTED, S.NEW),
    ],
)
def test_impossible_moves_are_refused(current: State, target: State) -> None:
    assert not can_transition(current, target)


def test_internal_states_show_as_the_six_public_statuses() -> None:
    assert set(PUBLIC_STATUS) == set(State)
    assert set(PUBLIC_STATUS.values()) == set(Status)
    assert {s for s, p in PUBLIC_STATUS.items() if p is Status.PENDING} == {S.PLACING, S.SUBMIT_UNKNOWN, S.NEW}
