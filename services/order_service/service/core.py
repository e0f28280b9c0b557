"""What every use case shares: one way to change an order and what happens after the change commits.

A change is always read-modify-write inside one BEGIN IMMEDIATE transaction: the order is read in
the transaction, a pure domain function computes the outcome, and the new order, its fill and its
side effects (outbox) are written together. Only after the commit are watchers told and the
outbox started, so nobody ever sees a change that could still roll back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.order_service.domain.model import Order, Outcome
from services.order_service.domain.states import State
from services.order_service.service.outbox import Outbox
from services.order_service.service.ports import OrderStore, OrderTx, OutboxEntry
from services.order_service.service.telemetry import OrderTelemetry
from services.order_service.service.watch import WatchHub
from shared.errors import NotFound
from shared.timeutil import now_ms

log = logging.getLogger("order_service")


@dataclass
class Committed:
    """What a transaction changed: orders to publish, outbox entries to perform, anomalies to log."""

    orders: list[tuple[Order, int]] = field(default_factory=list)
    entries: list[OutboxEntry] = field(default_factory=list)
    anomalies: list[tuple[str, str]] = field(default_factory=list)
    ended: list[Order] = field(default_factory=list)
    fills: int = 0


def persist(tx: OrderTx, before: Order, outcome: Outcome, committed: Committed) -> None:
    """Write an outcome inside the transaction and note what to do after the commit."""
    if outcome.fill is not None:
        tx.insert_fill(outcome.fill)
        committed.fills += 1
    if outcome.order.is_final and not before.is_final:
        committed.ended.append(outcome.order)
    if outcome.order is not before:
        tx.update_order(outcome.order)
        # Watchers hear of a change only when something they can see changed (or the order first
        # becomes visible, leaving PLACING), never twice the same PENDING.
        visible = before.state is State.PLACING or outcome.order.visible() != before.visible()
        if visible and outcome.order.state is not State.PLACING:
            committed.orders.append((outcome.order, tx.add_update(outcome.order)))
    for effect in outcome.effects:
        committed.entries.append(tx.add_effect(effect))
    if outcome.anomaly:
        committed.anomalies.append((outcome.order.order_id, outcome.anomaly))


class Core:
    """The store, the watchers, the outbox and the clock, with the commit protocol between them."""

    def __init__(
        self,
        store: OrderStore,
        hub: WatchHub,
        outbox: Outbox,
        clock: Callable[[], int] = now_ms,
        telemetry: OrderTelemetry | None = None,
    ):
        self.store = store
        self.hub = hub
        self.outbox = outbox
        self.clock = clock
        self.telemetry = telemetry if telemetry is not None else OrderTelemetry()
        # Told of every order that ended (after its commit): the fair-share count of open orders.
        self.on_final: Callable[[Order], None] = lambda _order: None
        # Submissions running in this process (a placement, or recovery's resubmission), by order id:
        # recovery leaves them alone, and a cancel waits for them before it is sent.
        self.placing: dict[str, asyncio.Task[Any]] = {}
        # Placements already answered whose answer is not committed yet (order id -> user id, task):
        # reads of that user's orders wait for them, so a caller reads what it was answered.
        self.recording: dict[str, tuple[str, asyncio.Task[Any]]] = {}

    async def recorded(self, user_id: str, order_id: str = "", timeout: float = 2.0) -> None:
        """Wait until the answers this process gave ``user_id`` (for ``order_id``, or all) are committed."""
        if not self.recording:
            return
        if order_id:
            entry = self.recording.get(order_id)
            tasks = [entry[1]] if entry is not None and entry[0] == user_id else []
        else:
            tasks = [task for user, task in self.recording.values() if user == user_id]
        if tasks:
            self.store.hurry()
            await asyncio.wait(tasks, timeout=timeout)

    async def mutate(self, order_id: str, change: Callable[[Order], Outcome], *, defer: float | None = None) -> Outcome:
        """Apply ``change`` to the order in one transaction; NOT_FOUND if it does not exist.

        ``defer`` (seconds): the write need not start a transaction of its own; it joins the next
        one, or starts one after that long (``GroupCommit``). For what recovery can rebuild only.
        """
        committed = Committed()

        def tx(t: OrderTx) -> Outcome:
            order = t.get_order(order_id)
            if order is None:
                raise NotFound(f"order {order_id} not found", reason="ORDER_NOT_FOUND")
            outcome = change(order)
            persist(t, order, outcome, committed)
            return outcome

        outcome = await self.store.write(tx, defer=defer)
        self.after_commit(committed)
        return outcome

    def after_commit(self, committed: Committed) -> None:
        """Tell the watchers, start the outbox entries, log anomalies, count what ended, filled and contradicted."""
        if committed.ended or committed.fills or committed.anomalies:
            self.telemetry.committed(committed.ended, committed.fills, len(committed.anomalies))
        for order, sequence in committed.orders:
            self.hub.publish(order, sequence)
            if order.is_final:
                self.on_final(order)
        if committed.entries:
            self.outbox.enqueue(committed.entries)
        for order_id, anomaly in committed.anomalies:
            log.error("order anomaly", extra={"order_id": order_id, "anomaly": anomaly})
