"""Money use cases as transaction functions: each runs whole inside one write transaction.

Shape of every operation: look up the idempotency record (same content: return the stored
result; other content: ABORTED), check the user and the rules (pure domain code), then write
balances, entries, the reservation and the idempotency record together. A refused operation
raises before anything is written, so it changes nothing and records no key: retrying it later
(after a deposit, say) is evaluated afresh.

Only ReserveFunds requires an ACTIVE user. Deposits and withdrawals are operator actions and
work for any status (an operator may refund a suspended user); releases and settlements finish
what an order already started, so they must go through whatever the status is now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from services.user_service.domain import ledger
from services.user_service.domain.commands import Deposit, MoneyCommand, Release, Reserve, Settle, Withdraw
from services.user_service.domain.model import Balance, User
from services.user_service.domain.results import (
    FundsResult,
    ReleaseResult,
    ReserveResult,
    Result,
    SettleResult,
    check_replay,
    decode,
    encode,
)
from services.user_service.service.ports import Repository
from shared.errors import NotFound

R = TypeVar("R", bound=Result)


class UserNotFound(NotFound):
    """No user has this id."""

    default_reason = "USER_NOT_FOUND"


def require_user(repo: Repository, user_id: str) -> User:
    """Return the user or raise NOT_FOUND."""
    user = repo.get_user(user_id)
    if user is None:
        raise UserNotFound(f"user {user_id} not found", metadata={"user_id": user_id})
    return user


def _replay(repo: Repository, command: MoneyCommand, kind: type[R]) -> R | None:
    stored = repo.get_idempotency(command.scope, command.key)
    if stored is None:
        return None
    fingerprint, text = stored
    check_replay(command.scope, command.key, fingerprint, command.fingerprint())
    result = decode(text)
    assert isinstance(result, kind), "same fingerprint implies same operation"
    return result


def _write(repo: Repository, command: MoneyCommand, outcome: ledger.Outcome, result: Result, now_ms: int) -> None:
    if outcome.entries:
        repo.save_balances(outcome.balances.values(), now_ms)
        repo.append_entries(outcome.entries)
    if outcome.reservation is not None and (outcome.entries or isinstance(command, Reserve)):
        repo.save_reservation(outcome.reservation, now_ms)
    repo.put_idempotency(command.scope, command.key, command.fingerprint(), encode(result), now_ms)


def _balance(repo: Repository, user_id: str, asset: str) -> Balance:
    return repo.get_balance(user_id, asset) or Balance(user_id, asset)


def _move_funds(
    repo: Repository,
    command: Deposit | Withdraw,
    apply: Callable[[Balance, Any, int], ledger.Outcome],
    now_ms: int,
) -> FundsResult:
    replayed = _replay(repo, command, FundsResult)
    if replayed is not None:
        return replayed
    require_user(repo, command.user_id)
    outcome = apply(_balance(repo, command.user_id, command.asset), command, now_ms)
    result = FundsResult(outcome.balances[command.asset])
    _write(repo, command, outcome, result, now_ms)
    return result


def deposit(repo: Repository, command: Deposit, now_ms: int) -> FundsResult:
    """Credit a user's available balance once per request_id."""
    return _move_funds(repo, command, ledger.deposit, now_ms)


def withdraw(repo: Repository, command: Withdraw, now_ms: int) -> FundsResult:
    """Debit a user's available balance once per request_id; more than available is refused."""
    return _move_funds(repo, command, ledger.withdraw, now_ms)


def reserve(repo: Repository, command: Reserve, now_ms: int) -> ReserveResult:
    """Lock funds of an ACTIVE user for one order, once per order_id."""
    replayed = _replay(repo, command, ReserveResult)
    if replayed is not None:
        return replayed
    user = require_user(repo, command.user_id)
    outcome = ledger.reserve(user, _balance(repo, command.user_id, command.asset), command, now_ms)
    assert outcome.reservation is not None
    result = ReserveResult(outcome.balances[command.asset], outcome.reservation)
    _write(repo, command, outcome, result, now_ms)
    return result


def release(repo: Repository, command: Release, now_ms: int) -> ReleaseResult:
    """Return part or all of an order's reservation, once per release_id."""
    replayed = _replay(repo, command, ReleaseResult)
    if replayed is not None:
        return replayed
    reservation = repo.get_reservation(command.order_id)
    if reservation is None:
        outcome = ledger.Outcome()
        result = ReleaseResult(ledger.ZERO, None)
    else:
        amount, outcome = ledger.release(
            reservation, _balance(repo, reservation.user_id, reservation.asset), command, now_ms
        )
        result = ReleaseResult(amount, outcome.reservation)
    _write(repo, command, outcome, result, now_ms)
    return result


def settle(repo: Repository, command: Settle, now_ms: int) -> SettleResult:
    """Book one trade against its order's reservation, once per trade_id."""
    replayed = _replay(repo, command, SettleResult)
    if replayed is not None:
        return replayed
    require_user(repo, command.user_id)
    balances = {asset: _balance(repo, command.user_id, asset) for asset in (command.debit_asset, command.credit_asset)}
    outcome = ledger.settle(repo.get_reservation(command.order_id), balances, command, now_ms)
    assert outcome.reservation is not None
    result = SettleResult(tuple(sorted(outcome.balances.values(), key=lambda b: b.asset)), outcome.reservation)
    _write(repo, command, outcome, result, now_ms)
    return result
