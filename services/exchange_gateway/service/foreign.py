"""Orders on the exchange account that the gateway did not place ("foreign" orders).

A person trading on the exchange's web site or another program using the same account places
orders the journal knows nothing of. They are found by every reconciliation (the account's open
orders, one request for every symbol) and by the user data stream, and kept in the journal's
foreign-order table, never as executions: they never reach StreamExecutions, so they never touch
a user's balance. Each new one is reported once as a security event, in the log and to the audit
trail (``audit``: FOREIGN_ORDER, without any secret). With the ``cancel`` policy
(GATEWAY_FOREIGN_ORDERS=cancel) every open one is cancelled by symbol and orderId at cancel
priority, and the cancel (or why it failed) is recorded; a failed cancel is tried again at the
next reconciliation.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from services.exchange_gateway.domain.errors import ExchangeError, Failure
from services.exchange_gateway.domain.model import ForeignOrder, OrderSnapshot
from services.exchange_gateway.service import recording
from services.exchange_gateway.service.ports import AuditPort, Exchange, Journal, RequestKind
from shared.audit import AuditRecord
from shared.errors import DomainError
from shared.logs import security_log
from shared.timeutil import now_ms as wall_ms

log = logging.getLogger("exchange_gateway.foreign")

Spawn = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[Any]"]


def _fields(order: ForeignOrder) -> dict[str, Any]:
    return {
        "symbol": order.symbol,
        "client_order_id": order.client_order_id,
        "exchange_order_id": order.exchange_order_id,
        "side": order.side.value if order.side else "",
        "type": order.type,
        "price": format(order.price, "f"),
        "quantity": format(order.quantity, "f"),
        "executed_quantity": format(order.executed_qty, "f"),
        "status": order.status.value,
    }


class ForeignOrders:
    """Records, reports and (by policy) cancels the orders the gateway did not place."""

    def __init__(
        self,
        journal: Journal,
        exchange: Exchange,
        *,
        cancel: bool,
        spawn: Spawn,
        clock: Callable[[], int] = wall_ms,
    ):
        self.journal = journal
        self.exchange = exchange
        self.cancel = cancel
        self.spawn = spawn
        self.clock = clock
        self.stats: Counter[str] = Counter()
        self.audit: AuditPort | None = None
        self.closed = False
        self._cancelling: set[tuple[str, int, str]] = set()

    def changed(self, written: list[tuple[ForeignOrder, bool]]) -> None:
        """Journal callback after a commit: report new foreign orders; with the cancel policy, cancel open ones."""
        for order, new in written:
            if new:
                self.stats["found"] += 1
                fields = {**_fields(order), "policy": "cancel" if self.cancel else "report"}
                security_log.warning("order on the exchange account that the system did not place", extra=fields)
                if self.audit is not None:
                    details = {k: str(v) for k, v in fields.items()}
                    self.audit.record(AuditRecord("FOREIGN_ORDER", self.clock(), details=details))
            if self.cancel and order.is_open and not order.cancel_time_ms and not order.cancel_error:
                self._cancel_in_background(order)

    async def reconcile(self, listed: list[OrderSnapshot]) -> None:
        """Record the foreign orders an open-orders answer lists; learn how those it no longer lists ended."""
        now = self.clock()
        seen = [ForeignOrder.seen_in(snap, now_ms=now) for snap in listed]
        if seen:
            await self.journal.transact(lambda tx: [recording.note_foreign(tx, order) for order in seen])
        listed_keys = {order.key for order in seen}
        for order in await self.journal.foreign_orders(open_only=True):
            if order.key in listed_keys:
                if self.cancel:
                    self._cancel_in_background(order)
                continue
            await self._learn_end(order)

    async def _learn_end(self, order: ForeignOrder) -> None:
        """Query a foreign order that is no longer listed as open (weight 4) and record what it became."""
        try:
            snap = await self.exchange.query_order(order.symbol, order.client_order_id)
        except ExchangeError as err:
            if err.failure is not Failure.NO_SUCH_ORDER:
                log.info("foreign order query failed; next reconciliation", extra={**_fields(order), "error": str(err)})
                return
            snap = None
        except DomainError as exc:
            log.info("foreign order query failed; next reconciliation", extra={**_fields(order), "error": str(exc)})
            return
        now = self.clock()
        if snap is None or snap.exchange_order_id != order.exchange_order_id:
            await self.journal.transact(lambda tx: recording.foreign_gone(tx, order.key, now_ms=now))
        else:
            found = snap
            await self.journal.transact(lambda tx: recording.note_foreign(tx, ForeignOrder.seen_in(found, now_ms=now)))

    def _cancel_in_background(self, order: ForeignOrder) -> None:
        if order.key in self._cancelling or self.closed:
            return
        self._cancelling.add(order.key)

        async def run() -> None:
            try:
                await self._cancel(order)
            finally:
                self._cancelling.discard(order.key)

        self.spawn(run(), f"cancel-foreign-{order.symbol}-{order.exchange_order_id}")

    async def _cancel(self, order: ForeignOrder) -> None:
        """Cancel a foreign order by symbol and orderId (cancel priority) and record the outcome."""
        answer: OrderSnapshot | None = None
        error = ""
        try:
            ticket = await self.exchange.admit(RequestKind.CANCEL, None)
            answer = await self.exchange.cancel_order(
                order.symbol, order.client_order_id, order.exchange_order_id, ticket=ticket, deadline=None
            )
        except (ExchangeError, DomainError) as exc:
            error = exc.describe() if isinstance(exc, ExchangeError) else str(exc)
        now = self.clock()
        await self.journal.transact(lambda tx: recording.foreign_cancel(tx, order.key, answer, error, now_ms=now))
        if answer is not None:
            self.stats["cancelled"] += 1
            security_log.warning("foreign order cancelled (GATEWAY_FOREIGN_ORDERS=cancel)", extra=_fields(order))
        else:
            self.stats["cancel_failed"] += 1
            log.warning("cancelling a foreign order failed", extra={**_fields(order), "error": error})
