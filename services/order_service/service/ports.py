"""The ports the use cases depend on: the user service, the exchange gateway and the order store.

Adapters implement them over gRPC and SQLite; unit tests implement them with fakes. Every method
raises ``shared.errors`` exceptions, never transport types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol, TypeVar

from services.order_service.domain.model import (
    Caller,
    Effect,
    ExchangeOrder,
    ExecutionReport,
    Fill,
    Order,
    SettleTrade,
    Submission,
    SymbolRules,
    UserLimits,
)
from services.order_service.domain.reconciliation import ExchangeAnomaly, ForeignOrder, LedgerTotal
from services.order_service.domain.states import State
from shared.audit import AuditRecord

T = TypeVar("T")


class UserPort(Protocol):
    """What the order service asks of the user service (with the service token)."""

    async def authenticate(self, api_key: str, timeout: float, *, client_peer: str = "") -> Caller:
        """Resolve an API key to its user, scopes and expiry; UNAUTHENTICATED for an unknown, revoked or expired key.

        ``client_peer`` is the address of the client that presented it: the user service throttles
        failed attempts by it (RESOURCE_EXHAUSTED once it refuses that address).
        """
        ...

    async def reserve_funds(self, order_id: str, user_id: str, asset: str, amount: Decimal, timeout: float) -> None:
        """Lock ``amount`` of ``asset`` for the order; idempotent on order_id."""
        ...

    async def release_funds(self, order_id: str, release_id: str, amount: Decimal | None, timeout: float) -> None:
        """Return part (or with None all) of the order's reservation; idempotent on release_id."""
        ...

    async def settle_trade(self, trade: SettleTrade, timeout: float, *, release_id: str = "") -> None:
        """Book one trade against the order's reservation; idempotent on trade_id.

        With ``release_id``, then return everything still reserved for the order under that id, in
        the same transaction: what ``release_funds(order_id, release_id, None)`` does, and
        idempotent with it (whichever comes second releases nothing more).
        """
        ...

    async def ledger_totals(self, timeout: float) -> dict[str, LedgerTotal]:
        """Per asset, what the ledger holds: users' available and locked, and the house accounts."""
        ...

    async def open_reservations(self, after: str, before: str, timeout: float) -> list[str]:
        """The order ids with ``after < order_id < before`` that still have funds reserved, ascending."""
        ...


class GatewayPort(Protocol):
    """What the order service asks of the exchange gateway (with the service token)."""

    async def submit_order(self, order: Order, submission: Submission, timeout: float) -> ExchangeOrder:
        """Submit ``order`` as ``submission`` says, idempotent on the client order id (= order_id)."""
        ...

    async def cancel_order(self, client_order_id: str, timeout: float) -> ExchangeOrder:
        """Cancel and return the order's state after the attempt."""
        ...

    async def get_order(self, client_order_id: str, refresh: bool, timeout: float) -> ExchangeOrder:
        """Return the order from the journal (or from the exchange with refresh)."""
        ...

    async def get_symbol_rules(self, symbol: str, timeout: float) -> SymbolRules:
        """Return one symbol's rules; NOT_FOUND for an unknown symbol."""
        ...

    async def list_symbol_rules(self, timeout: float) -> list[SymbolRules]:
        """Return every symbol's rules."""
        ...

    async def get_last_price(self, symbol: str, timeout: float) -> Decimal:
        """Return the symbol's last traded price."""
        ...

    def stream_executions(self, after_sequence: int) -> AsyncIterator[ExecutionReport]:
        """Yield journaled executions after ``after_sequence``, then follow live ones."""
        ...

    async def account_balances(self, timeout: float) -> dict[str, tuple[Decimal, Decimal]]:
        """The exchange account's (free, locked) per asset."""
        ...

    async def foreign_orders(self, timeout: float) -> list[ForeignOrder]:
        """Orders on the exchange account that the platform did not place."""
        ...

    async def anomalies(self, timeout: float) -> list[ExchangeAnomaly]:
        """Contradictions between the exchange and the gateway's journal."""
        ...


@dataclass(frozen=True)
class OutboxEntry:
    """A side effect stored in the outbox under an increasing id."""

    id: int
    effect: Effect


@dataclass(frozen=True)
class ParkedEffect:
    """An outbox entry that failed for a definite reason too often and waits for an operator."""

    entry: OutboxEntry
    reason: str
    attempts: int
    parked_ms: int


class OrderTx(Protocol):
    """The operations available inside one write transaction (BEGIN IMMEDIATE; all or nothing)."""

    def get_order(self, order_id: str) -> Order | None:
        """The order, read inside the transaction."""
        ...

    def find_by_client_order_id(self, user_id: str, client_order_id: str) -> Order | None:
        """The user's order with this client order id."""
        ...

    def insert_order(self, order: Order) -> bool:
        """Insert a new order; False (and nothing written) if the user already has its client order id."""
        ...

    def update_order(self, order: Order) -> None:
        """Write every mutable field of the order."""
        ...

    def delete_order(self, order_id: str) -> None:
        """Remove an order that never reserved anything or was never sent."""
        ...

    def fill_exists(self, fill_id: str) -> bool:
        """Whether the fill was already recorded."""
        ...

    def insert_fill(self, fill: Fill) -> None:
        """Record a fill (its id is unique)."""
        ...

    def add_effect(self, effect: Effect) -> OutboxEntry:
        """Append a side effect to the outbox."""
        ...

    def get_cursor(self) -> int:
        """The sequence of the last execution applied."""
        ...

    def set_cursor(self, sequence: int) -> None:
        """Move the execution cursor."""
        ...

    def add_update(self, order: Order) -> int:
        """Record an update the user can see and return its sequence (the user's previous one + 1)."""
        ...


class OrderStore(Protocol):
    """The service's own database."""

    def hurry(self) -> None:
        """Commit the deferred writes now (somebody waits for one of them)."""
        ...

    async def write(self, fn: Callable[[OrderTx], T], *, defer: float | None = None) -> T:
        """Run ``fn`` in one write transaction, on the writer thread; commit unless it raises.

        ``defer``: seconds the write may wait to share a transaction started by another write.
        """
        ...

    async def get_order(self, order_id: str) -> Order | None:
        """One order."""
        ...

    async def list_orders(
        self,
        user_id: str,
        *,
        symbol: str,
        states: Collection[State] | None,
        before_order_id: str,
        limit: int,
    ) -> list[Order]:
        """The user's orders, newest first, with order ids below ``before_order_id`` (empty: from the newest)."""
        ...

    async def list_fills(self, order_id: str, *, after_id: int, limit: int) -> list[tuple[int, Fill]]:
        """An order's fills, oldest first, with their row ids (the page cursor)."""
        ...

    async def list_trades(
        self,
        user_id: str,
        *,
        symbol: str,
        start_ms: int | None,
        end_ms: int | None,
        before: tuple[int, int] | None,
        limit: int,
    ) -> list[tuple[int, Fill]]:
        """The user's fills across orders, newest first by (trade time, row id), strictly before ``before``."""
        ...

    async def active_orders(self, states: Collection[State], updated_before_ms: int | None = None) -> list[Order]:
        """Orders in ``states`` (optionally only those unchanged since a time), oldest first."""
        ...

    async def cancel_pending_orders(self, requested_before_ms: int) -> list[Order]:
        """Active orders whose cancel (or our expiry) was requested and that are unchanged since a time."""
        ...

    async def get_orders(self, order_ids: Collection[str]) -> list[Order]:
        """The orders with these ids that exist."""
        ...

    async def newest_order_id(self) -> str:
        """The greatest order id stored ("" when there is none); ids sort in creation order."""
        ...

    async def user_limits(self) -> dict[str, UserLimits]:
        """Every user's own limits set by an admin."""
        ...

    async def set_user_limits(self, user_id: str, limits: UserLimits | None) -> None:
        """Store a user's own limits (None: back to the defaults)."""
        ...

    async def pending_effects(self) -> list[OutboxEntry]:
        """Every side effect not yet performed, in id order (parked ones included)."""
        ...

    async def updates_after(self, user_id: str, after_sequence: int, limit: int) -> list[tuple[int, Order]]:
        """The user's recorded updates with a greater sequence, oldest first, with their sequences."""
        ...

    async def first_kept_update(self, user_id: str) -> int | None:
        """The user's oldest recorded update still kept; None if none is."""
        ...

    async def prune_updates(self, before_ms: int) -> int:
        """Forget updates older than a time (each user's newest is kept); return how many went."""
        ...

    async def park_effect(self, entry_id: int, reason: str, attempts: int, parked_ms: int) -> None:
        """Mark an outbox entry as parked (kept, not performed until an operator retries it)."""
        ...

    async def unpark_effect(self, entry_id: int) -> bool:
        """Take an entry off the parked list; False if it was not parked."""
        ...

    async def parked_effects(self) -> list[ParkedEffect]:
        """Every parked entry, oldest first."""
        ...

    async def delete_effects(self, ids: Collection[int]) -> None:
        """Forget side effects that were performed."""
        ...

    async def get_cursor(self) -> int:
        """The sequence of the last execution applied."""
        ...

    def close(self) -> None:
        """Release the database."""
        ...


class AuditPort(Protocol):
    """Where security events go: the user service's audit trail, through a queue that never blocks."""

    def record(self, record: AuditRecord) -> None:
        """Queue one event for delivery; never blocks, never raises."""
        ...
