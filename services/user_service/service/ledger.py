"""Money use cases as transaction functions: each runs whole inside one write transaction.

Shape of every operation: look up the idempotency record (same content: return the stored
result; other content: ABORTED), check the user and the rules (pure domain code), then write
balances, entries, the reservation and the idempotency record together. A refused operation
raises before anything is written, so it changes nothing and records no key: retrying it later
(after a deposit, say) is evaluated afresh.

SettleTrade with a release_id runs ``settle_and_release``: the trade, then the release of what
the order still has reserved, in one transaction, writing what the two operations would write as
two calls (the same entries in the same order, the same two idempotency records), each under its
own key, so either may have been done before, alone.

A settlement also books the house side in the same transaction: the user's fee to ``fee_income``
and the exchange's fee from ``exchange_fees`` (see ``domain.ledger``).

Only ReserveFunds requires an ACTIVE user. Deposits and withdrawals are operator actions and
work for any status (an operator may refund a suspended user); releases and settlements finish
what an order already started, so they must go through whatever the status is now.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from services.user_service.domain import ledger
from services.user_service.domain.commands import Deposit, MoneyCommand, Release, Reserve, Settle, Withdraw
from services.user_service.domain.model import AssetTotals, Balance, HouseBalance, Reservation, User
from services.user_service.domain.results import (
    FundsResult,
    ReleaseResult,
    ReserveResult,
    Result,
    SettleReleaseResult,
    SettleResult,
    check_replay,
    decode,
    encode,
)
from services.user_service.service.ports import Repository
from shared.errors import NotFound
from shared.money import ZERO

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


def _store(repo: Repository, change: ledger.LedgerChange, now_ms: int, *, new_reservation: bool = False) -> None:
    if change.entries:
        repo.save_balances(change.balances.values(), now_ms)
        repo.append_entries(change.entries)
    if change.house_entries:
        repo.save_house_balances(change.house_balances.values(), now_ms)
        repo.append_house_entries(change.house_entries)
    if change.reservation is not None and (change.entries or new_reservation):
        repo.save_reservation(change.reservation, now_ms)


def _remember(repo: Repository, command: MoneyCommand, result: Result, now_ms: int) -> None:
    repo.put_idempotency(command.scope, command.key, command.fingerprint(), encode(result), now_ms)


def _write(repo: Repository, command: MoneyCommand, change: ledger.LedgerChange, result: Result, now_ms: int) -> None:
    _store(repo, change, now_ms, new_reservation=isinstance(command, Reserve))
    _remember(repo, command, result, now_ms)


def _balance(repo: Repository, user_id: str, asset: str) -> Balance:
    return repo.get_balance(user_id, asset) or Balance(user_id, asset)


def _move_funds(
    repo: Repository,
    command: Deposit | Withdraw,
    apply: Callable[[Balance, Any, int], ledger.LedgerChange],
    now_ms: int,
) -> FundsResult:
    replayed = _replay(repo, command, FundsResult)
    if replayed is not None:
        return replayed
    require_user(repo, command.user_id)
    change = apply(_balance(repo, command.user_id, command.asset), command, now_ms)
    result = FundsResult(change.balances[command.asset])
    _write(repo, command, change, result, now_ms)
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
    change = ledger.reserve(user, _balance(repo, command.user_id, command.asset), command, now_ms)
    assert change.reservation is not None
    result = ReserveResult(change.balances[command.asset], change.reservation)
    _write(repo, command, change, result, now_ms)
    return result


def release(repo: Repository, command: Release, now_ms: int) -> ReleaseResult:
    """Return part or all of an order's reservation, once per release_id."""
    replayed = _replay(repo, command, ReleaseResult)
    if replayed is not None:
        return replayed
    reservation = repo.get_reservation(command.order_id)
    if reservation is None:
        change = ledger.LedgerChange()
        result = ReleaseResult(ZERO, None)
    else:
        amount, change = ledger.release(
            reservation, _balance(repo, reservation.user_id, reservation.asset), command, now_ms
        )
        result = ReleaseResult(amount, change.reservation)
    _write(repo, command, change, result, now_ms)
    return result


def _settle_change(repo: Repository, command: Settle, now_ms: int) -> tuple[ledger.LedgerChange, SettleResult]:
    require_user(repo, command.user_id)
    balances = {asset: _balance(repo, command.user_id, asset) for asset in (command.debit_asset, command.credit_asset)}
    house = {
        (account, asset): repo.get_house_balance(account, asset) or HouseBalance(account, asset)
        for account, asset in ledger.house_keys(command)
    }
    change = ledger.settle(repo.get_reservation(command.order_id), balances, house, command, now_ms)
    assert change.reservation is not None
    result = SettleResult(tuple(sorted(change.balances.values(), key=lambda b: b.asset)), change.reservation)
    return change, result


def settle(repo: Repository, command: Settle, now_ms: int) -> SettleResult:
    """Book one trade against its order's reservation, once per trade_id."""
    replayed = _replay(repo, command, SettleResult)
    if replayed is not None:
        return replayed
    change, result = _settle_change(repo, command, now_ms)
    _write(repo, command, change, result, now_ms)
    return result


def settle_and_release(repo: Repository, command: Settle, release: Release, now_ms: int) -> SettleReleaseResult:
    """Book one trade (once per trade_id), then release all its order still has reserved (once per release_id).

    Both keys are checked before anything is written, so a key reused with other content raises
    ABORTED and changes nothing. A trade already settled is not booked again and a release id
    already used releases nothing more; the other part is still done. When both are new, each
    touched row is saved once, with the entries of the trade followed by that of the release.
    The balances and reservation returned are those at the end of this call.
    """
    if release.order_id != command.order_id or release.amount is not None:
        raise ValueError("the release must be of the whole remainder of the trade's order")
    settled = _replay(repo, command, SettleResult)
    released = _replay(repo, release, ReleaseResult)
    if settled is None:
        change, settled = _settle_change(repo, command, now_ms)
        _remember(repo, command, settled, now_ms)
        reservation: Reservation | None = change.reservation
    else:
        change = ledger.LedgerChange()
        reservation = repo.get_reservation(command.order_id)
    # A settled trade had a reservation, and reservations are never deleted.
    assert reservation is not None, f"order {command.order_id} has a settled trade but no reservation"
    if released is None:
        balance = change.balances.get(reservation.asset)
        if balance is None:
            balance = _balance(repo, reservation.user_id, reservation.asset)
        amount, freed = ledger.release(reservation, balance, release, now_ms)
        released = ReleaseResult(amount, freed.reservation)
        _remember(repo, release, released, now_ms)
        change.entries.extend(freed.entries)
        change.balances.update(freed.balances)
        reservation = freed.reservation
        assert reservation is not None
    change.reservation = reservation
    _store(repo, change, now_ms)
    assets = (command.debit_asset, command.credit_asset)
    if all(asset in change.balances for asset in assets):
        balances = [change.balances[asset] for asset in assets]  # the trade was booked now: current
    else:
        balances = [_balance(repo, command.user_id, asset) for asset in assets]
    return SettleReleaseResult(tuple(sorted(balances, key=lambda b: b.asset)), reservation, released.released)


def ledger_totals(repo: Repository) -> list[AssetTotals]:
    """Per asset, what users hold and what the house accounts hold, from one consistent snapshot."""
    return ledger.totals(repo.all_balances(), repo.list_house_balances())
