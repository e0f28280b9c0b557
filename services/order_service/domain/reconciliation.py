"""The client-money reconciliation: what the exchange account holds against what the ledger owes.

Modelled on the external client-money reconciliation of the UK FCA's CASS 7.15: per asset, the
exchange account's total (free + locked) is compared with what the books say it must hold: every
user's balance (available + locked), the house accounts (fees earned, exchange fees paid: the
platform's own money), and the trades the exchange has already made that the ledger has not booked
yet (in flight). The difference is what nobody's books explain:

    difference = exchange total - (users' total + house total + in flight)

- BALANCED: zero.
- EXCESS: the exchange holds more than the books (the platform's own funds on the account, such as
  BNB bought to pay fees, or a deposit to the exchange not yet credited to a user). Not a loss, but
  every excess should have a known cause.
- SHORTFALL: the exchange holds less than the users and the house are owed (a credited deposit that
  never arrived, a withdrawal made at the exchange but not booked, fills the books missed). Users'
  money is at risk: investigate at once.

Pure arithmetic: no gRPC, no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from shared.money import ZERO

from .model import Effect, SettleTrade


class ReconciliationStatus(StrEnum):
    """How one asset (or the whole report, by its worst asset) reconciles."""

    BALANCED = "BALANCED"
    EXCESS = "EXCESS"
    SHORTFALL = "SHORTFALL"


@dataclass(frozen=True)
class LedgerTotal:
    """What the ledger holds of one asset: users' available and locked, and the house accounts."""

    users_available: Decimal = ZERO
    users_locked: Decimal = ZERO
    house_total: Decimal = ZERO

    @property
    def users_total(self) -> Decimal:
        """Everything the users are owed in the asset."""
        return self.users_available + self.users_locked


@dataclass(frozen=True)
class AssetReconciliation:
    """One line of the report."""

    asset: str
    exchange_free: Decimal
    exchange_locked: Decimal
    users_total: Decimal
    house_total: Decimal
    in_flight: Decimal

    @property
    def exchange_total(self) -> Decimal:
        """What the exchange account holds (free + locked)."""
        return self.exchange_free + self.exchange_locked

    @property
    def difference(self) -> Decimal:
        """Exchange total minus what the books say it must hold."""
        return self.exchange_total - (self.users_total + self.house_total + self.in_flight)

    @property
    def status(self) -> ReconciliationStatus:
        """BALANCED, EXCESS or SHORTFALL by the sign of the difference."""
        if self.difference < 0:
            return ReconciliationStatus.SHORTFALL
        if self.difference > 0:
            return ReconciliationStatus.EXCESS
        return ReconciliationStatus.BALANCED


def in_flight(effects: Iterable[Effect]) -> dict[str, Decimal]:
    """Per asset, what trades already moved on the exchange account and the ledger has not booked yet.

    Each settlement not yet performed (waiting in the outbox, or parked): the exchange account has
    already paid the debit, received the credit and paid the exchange's fee. The platform's fee the
    user pays moves money between a user and the house, so it changes no total. Releases move
    nothing between the books and the exchange.
    """
    totals: dict[str, Decimal] = {}

    def add(asset: str, amount: Decimal) -> None:
        if asset and amount:
            totals[asset] = totals.get(asset, ZERO) + amount

    for effect in effects:
        if isinstance(effect, SettleTrade):
            add(effect.credit_asset, effect.credit_amount)
            add(effect.debit_asset, -effect.debit_amount)
            add(effect.exchange_fee_asset, -effect.exchange_fee_amount)
    return totals


def reconcile(
    exchange: Mapping[str, tuple[Decimal, Decimal]],
    ledger: Mapping[str, LedgerTotal],
    pending: Mapping[str, Decimal],
) -> list[AssetReconciliation]:
    """One line per asset that the exchange, the ledger or a pending trade mentions, sorted by asset."""
    lines = []
    for asset in sorted(set(exchange) | set(ledger) | set(pending)):
        free, locked = exchange.get(asset, (ZERO, ZERO))
        books = ledger.get(asset, LedgerTotal())
        lines.append(
            AssetReconciliation(
                asset=asset,
                exchange_free=free,
                exchange_locked=locked,
                users_total=books.users_total,
                house_total=books.house_total,
                in_flight=pending.get(asset, ZERO),
            )
        )
    return lines


def overall(lines: Iterable[AssetReconciliation]) -> ReconciliationStatus:
    """The worst status of any asset: a shortfall anywhere is a shortfall."""
    statuses = {line.status for line in lines}
    if ReconciliationStatus.SHORTFALL in statuses:
        return ReconciliationStatus.SHORTFALL
    if ReconciliationStatus.EXCESS in statuses:
        return ReconciliationStatus.EXCESS
    return ReconciliationStatus.BALANCED


@dataclass(frozen=True)
class ForeignOrder:
    """An order on the exchange account that the platform did not place, as the gateway reports it."""

    symbol: str
    client_order_id: str
    exchange_order_id: int
    side: str
    type: str
    price: Decimal
    quantity: Decimal
    executed_quantity: Decimal
    status: str
    open: bool
    first_seen_ms: int


@dataclass(frozen=True)
class ExchangeAnomaly:
    """A contradiction between the exchange and the gateway's journal (a reused trade key, a forgotten order)."""

    kind: str
    symbol: str
    client_order_id: str
    trade_id: int
    detail: str
    first_seen_ms: int
