"""The ports the use cases work through: the exchange and the journal (adapters implement them)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from services.exchange_gateway.domain.model import (
    Anomaly,
    Balance,
    ExchangeEvent,
    Execution,
    Fill,
    ForeignOrder,
    ForeignPosition,
    Order,
    OrderRequest,
    OrderSnapshot,
    SymbolRules,
    TradeIdentity,
)
from shared.audit import AuditRecord

T = TypeVar("T")


class RequestKind(StrEnum):
    NEW_ORDER = "NEW_ORDER"
    CANCEL = "CANCEL"


@dataclass(frozen=True)
class LimitStatus:
    rate_limit_type: str
    interval: str
    interval_num: int
    limit: int
    used: int
    window_end_ms: int


@dataclass(frozen=True)
class RateStatus:
    limits: list[LimitStatus]
    queued_cancels: int
    queued_orders: int
    queued_queries: int
    backoff_until_ms: int | None
    http_429: int
    http_418: int
    clock_offset_ms: int


class Exchange(Protocol):
    """Binance (or the simulator) in domain terms. Failures raise ``domain.errors.ExchangeError``;
    a request that cannot get rate-limit capacity before its deadline raises ``ResourceExhausted``."""

    recv_window_ms: int

    def now_ms(self) -> int:
        """The exchange's clock, in ms."""
        ...

    def deadline_after(self, seconds: float | None) -> float | None:
        """The deadline (local clock, ms) of a caller with ``seconds`` left (None: no deadline)."""
        ...

    async def admit(self, kind: RequestKind, deadline: float | None, *, fair_share_key: str = "") -> Any:
        """Wait for rate-limit capacity for one request of ``kind``; returns a ticket to send it with.

        New orders of different ``fair_share_key`` (the user they are for) are let through in turn.
        """
        ...

    async def new_order(
        self,
        request: OrderRequest,
        *,
        timestamp_ms: int,
        ticket: Any,
        deadline: float | None,
        on_retimestamp: Callable[[int], Awaitable[None]],
        fair_share_key: str = "",
    ) -> OrderSnapshot: ...

    async def cancel_order(
        self, symbol: str, client_order_id: str, exchange_order_id: int, *, ticket: Any, deadline: float | None
    ) -> OrderSnapshot: ...

    async def query_order(
        self, symbol: str, client_order_id: str, *, deadline: float | None = None
    ) -> OrderSnapshot: ...

    async def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        """The account's open orders on ``symbol``, or on every symbol (one request) when it is None."""
        ...

    async def order_trades(self, symbol: str, exchange_order_id: int) -> list[Fill]: ...

    async def balances(self, deadline: float | None = None) -> list[Balance]: ...

    async def last_price(self, symbol: str, deadline: float | None = None) -> Decimal: ...

    async def load_exchange_info(self) -> list[SymbolRules]:
        """Read exchangeInfo: returns the symbols' rules and adopts the rate limits."""
        ...

    async def sync_time(self) -> None: ...

    def rate_limit_status(self) -> RateStatus: ...


class JournalTx(Protocol):
    """One journal transaction (runs on the database writer thread; no awaiting inside)."""

    def get_order(self, client_order_id: str) -> Order | None: ...

    def put_order(self, order: Order) -> None: ...

    def add_execution(self, execution: Execution) -> Execution | None:
        """Journal ``execution`` under the next sequence; None if its dedup key is already journaled."""
        ...

    def journaled(self, dedup_key: str) -> Execution | None:
        """The execution journaled under ``dedup_key``, if any."""
        ...

    def add_anomaly(self, anomaly: Anomaly) -> bool:
        """Record ``anomaly``; False if the same one (its dedup key) is already recorded."""
        ...

    def get_foreign(self, key: tuple[str, int, str]) -> ForeignOrder | None:
        """The foreign order with this (symbol, exchange order id, client order id), if recorded."""
        ...

    def put_foreign(self, order: ForeignOrder) -> None: ...


class Journal(Protocol):
    last_sequence: int

    async def transact(
        self, fn: Callable[[JournalTx], T], *, settled: Callable[[], T | None] | None = None, defer: float | None = None
    ) -> T:
        """Run ``fn`` in a journal transaction (batched with others) and return its result after commit.

        ``settled``, if given, runs when the writer takes ``fn``, after every earlier write has
        committed: a result other than None means the journal already holds what ``fn`` would
        write, and is returned without touching the database. It is a shortcut only: its result
        must be what ``fn`` would return when it finds nothing to write. ``defer`` (seconds): the
        write waits for a transaction another write starts, or starts one after that long; for
        what recovery can rebuild by querying the exchange only.
        """
        ...

    def hurry(self) -> None:
        """Commit the deferred writes now (somebody waits for one of them)."""
        ...

    def submit(
        self,
        fn: Callable[[JournalTx], T],
        *,
        settled: Callable[[], T | None] | None = None,
        defer: float | None = None,
    ) -> asyncio.Future[T]:
        """Queue ``fn`` without waiting (keeps the order of submission); ``settled`` as for ``transact``."""
        ...

    async def get_order(self, client_order_id: str) -> Order | None: ...

    def cached_order(self, client_order_id: str) -> Order | None:
        """The order as of the last commit, if it is in memory (never waits). Orders that are not
        final are always there; final ones only for a while: callers fall back to ``get_order``."""
        ...

    def journaled_trade(self, dedup_key: str) -> TradeIdentity | None:
        """The identity of a trade journaled recently under this key (a hint; the database decides)."""
        ...

    async def orders_not_final(self) -> list[Order]: ...

    async def executions_after(self, sequence: int, limit: int) -> list[Execution]: ...

    async def foreign_orders(self, *, open_only: bool = False) -> list[ForeignOrder]:
        """Every recorded foreign order (or only those still open), oldest first."""
        ...

    async def page_of_foreign_orders(
        self, after: ForeignPosition | None, limit: int, *, open_only: bool = False
    ) -> list[ForeignOrder]:
        """Up to ``limit`` recorded foreign orders after ``after`` (None: from the first), oldest first."""
        ...

    async def page_of_anomalies(self, after_id: int, limit: int) -> list[tuple[int, Anomaly]]:
        """Up to ``limit`` recorded anomalies with a row id above ``after_id``, with their ids, oldest first."""
        ...


EventSource = Callable[[dict[str, Any]], ExchangeEvent | None]


class AuditPort(Protocol):
    """Where security events go: the user service's audit trail, through a queue that never blocks."""

    def record(self, record: AuditRecord) -> None:
        """Queue one event for delivery; never blocks, never raises."""
        ...
