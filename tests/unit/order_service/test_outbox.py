"""The outbox: a filled order's last settlement and final release go out as one call; deletes are coalesced.

The first tests run the whole app over the fakes (``harness``); the others drive an ``Outbox``
directly over a recording user port and an in-memory store, so the queue contents are exact.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from decimal import Decimal

from services.order_service.domain.model import ReleaseFunds, SettleTrade, final_release
from services.order_service.domain.states import Status
from services.order_service.service.deadline import Deadline
from services.order_service.service.outbox import Outbox
from services.order_service.service.ports import OutboxEntry, ParkedEffect
from shared.errors import FailedPrecondition, NotFound, Unavailable

from .conftest import ALICE, Harness, limit_buy

D = Decimal


def usdt(h: Harness) -> tuple[Decimal, Decimal]:
    return h.users.balance(ALICE, "USDT")


def usdt_kinds(h: Harness) -> list[str]:
    return [e.kind for e in h.users.ledger if e.asset == "USDT" and e.reference != "deposit"]


async def test_a_filled_order_settles_and_releases_the_rest_in_one_call(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.01000", "49000.00"))  # reserves 490 USDT
    await h.gateway.trade(order.order_id, "0.01", "48000.00")  # fills at a better price: 10 USDT left over
    await h.settle()

    assert (await h.order(order.order_id)).status is Status.FILLED
    assert h.users.calls["settle"] == 1 and h.users.calls["settle+release"] == 1
    assert h.users.calls["release"] == 0, "the final release went with the settlement"
    assert h.users.releases == {f"{order.order_id}:final": D("10")}
    assert usdt(h) == (D("100000") - D("480"), D("0"))
    assert usdt_kinds(h) == ["RESERVE", "TRADE_DEBIT", "RELEASE"]
    assert await h.app.store.pending_effects() == []


async def test_a_partial_fill_then_cancel_settles_and_releases_in_two_calls(harness: Harness) -> None:
    h = harness
    order = await h.place(limit_buy("0.02000", "49000.00"))
    await h.gateway.trade(order.order_id, "0.005", "49000.00")
    await h.settle()
    assert h.users.calls["settle"] == 1 and h.users.calls["release"] == 0

    cancelled = await h.app.cancel_order(h.alice, order.order_id, Deadline.after(5))
    await h.settle()

    assert cancelled.status is Status.CANCELLED
    assert h.users.calls["settle"] == 1 and h.users.calls["release"] == 1
    assert h.users.calls["settle+release"] == 0
    assert usdt(h) == (D("100000") - D("245"), D("0"))
    assert usdt_kinds(h) == ["RESERVE", "TRADE_DEBIT", "RELEASE"]
    assert await h.app.store.pending_effects() == []


# --- the Outbox alone ----------------------------------------------------------------------------


class Users:
    """Records each call; ``failures`` calls fail first (UNAVAILABLE); ``refused`` orders never settle."""

    def __init__(self, failures: int = 0) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.failures = failures
        self.refused: set[str] = set()
        self.refusals = 0

    def _maybe_fail(self) -> None:
        if self.failures:
            self.failures -= 1
            raise Unavailable("user service down")

    async def settle_trade(self, trade: SettleTrade, timeout: float, *, release_id: str = "") -> None:
        if trade.order_id in self.refused:
            self.refusals += 1
            raise FailedPrecondition(f"order {trade.order_id} has no reservation", reason="RESERVATION_MISMATCH")
        self._maybe_fail()
        self.calls.append(("settle", trade.trade_id, release_id) if release_id else ("settle", trade.trade_id))

    async def release_funds(self, order_id: str, release_id: str, amount: Decimal | None, timeout: float) -> None:
        self._maybe_fail()
        self.calls.append(("release", release_id, "ALL" if amount is None else str(amount)))


class Store:
    """The outbox methods of ``OrderStore``, recording each delete transaction."""

    def __init__(self, pending: list[OutboxEntry] | None = None) -> None:
        self.pending = list(pending or [])
        self.deletes: list[list[int]] = []
        self.parked: dict[int, ParkedEffect] = {}

    async def pending_effects(self) -> list[OutboxEntry]:
        return list(self.pending)

    async def park_effect(self, entry_id: int, reason: str, attempts: int, parked_ms: int) -> None:
        entry = next(e for e in self.pending if e.id == entry_id)
        self.parked[entry_id] = ParkedEffect(entry, reason, attempts, parked_ms)

    async def unpark_effect(self, entry_id: int) -> bool:
        return self.parked.pop(entry_id, None) is not None

    async def parked_effects(self) -> list[ParkedEffect]:
        return [self.parked[i] for i in sorted(self.parked)]

    async def delete_effects(self, ids: Collection[int]) -> None:
        self.deletes.append(sorted(ids))
        self.pending = [e for e in self.pending if e.id not in set(ids)]


def settle(order_id: str, n: int) -> SettleTrade:
    return SettleTrade(
        trade_id=f"{order_id}:T{n}",
        order_id=order_id,
        user_id=ALICE,
        debit_asset="USDT",
        debit_amount=D("10"),
        credit_asset="BTC",
        credit_amount=D("0.0002"),
        fee_asset="",
        fee_amount=D("0"),
        trade_time_ms=1,
    )


def entries(*effects: SettleTrade | ReleaseFunds) -> list[OutboxEntry]:
    return [OutboxEntry(i, effect) for i, effect in enumerate(effects, start=1)]


async def test_only_a_settlement_followed_by_its_final_release_is_combined() -> None:
    store = Store(
        entries(
            settle("A", 1),
            settle("A", 2),
            final_release("A"),  # A: T1 alone, then T2 with the final release
            ReleaseFunds("B", "B:part", D("5")),  # B: a partial release is never combined
            settle("B", 1),
            final_release("B"),
            final_release("C"),  # C: a release with no settlement before it
            settle("C", 1),  # ...and a settlement with none after it
            settle("D", 1),
            ReleaseFunds("D", "D:part", D("3")),  # D: a settlement before a partial release
        )
    )
    users = Users()
    outbox = Outbox(store, users)  # type: ignore[arg-type]
    await outbox.start()
    await outbox.idle()
    await outbox.stop()

    def of(order_id: str) -> list[tuple[str, ...]]:
        return [c for c in users.calls if c[1].startswith(order_id)]

    assert of("A") == [("settle", "A:T1"), ("settle", "A:T2", "A:final")]
    assert of("B") == [("release", "B:part", "5"), ("settle", "B:T1", "B:final")]
    assert of("C") == [("release", "C:final", "ALL"), ("settle", "C:T1")]
    assert of("D") == [("settle", "D:T1"), ("release", "D:part", "3")]
    assert len(users.calls) == 8  # ten entries: each settlement took its order's next release with it
    assert store.pending == []


async def test_a_failing_combined_call_keeps_both_entries_until_it_succeeds() -> None:
    store = Store(entries(settle("A", 1), final_release("A")))
    users = Users(failures=2)
    outbox = Outbox(store, users, flush_delay=0)  # type: ignore[arg-type]
    await outbox.start()
    await asyncio.sleep(0.02)
    assert outbox.pending("A") == 2 and store.deletes == []
    await outbox.idle()
    assert users.calls == [("settle", "A:T1", "A:final")]
    assert store.deletes == [[1, 2]]
    await outbox.stop()


async def test_deletes_of_many_completions_share_one_transaction() -> None:
    store = Store()
    outbox = Outbox(store, Users(), flush_delay=0.2)  # type: ignore[arg-type]
    await outbox.start()
    batch = entries(*(settle(f"O{i}", 1) for i in range(10)))
    store.pending = list(batch)
    outbox.enqueue(batch[:5])
    await asyncio.sleep(0.05)
    assert outbox.pending() == 0, "all performed"
    assert store.deletes == [], "the flusher is still waiting for more"
    outbox.enqueue(batch[5:])
    await asyncio.sleep(0.3)
    assert store.deletes == [list(range(1, 11))], "one delete for all ten"
    await outbox.stop()


async def test_stop_and_idle_flush_at_once_without_waiting_for_the_delay() -> None:
    store = Store(entries(settle("A", 1), final_release("A"), settle("B", 1)))
    outbox = Outbox(store, Users(), flush_delay=60)  # type: ignore[arg-type]
    await outbox.start()
    async with asyncio.timeout(2):
        await outbox.idle()
    assert store.deletes == [[1, 2, 3]]

    outbox.enqueue([OutboxEntry(4, settle("C", 1))])
    store.pending.append(OutboxEntry(4, settle("C", 1)))
    async with asyncio.timeout(2):
        while outbox.pending():
            await asyncio.sleep(0.01)
        await outbox.stop()
    assert store.deletes == [[1, 2, 3], [4]]
    assert store.pending == []


# --- parked effects ------------------------------------------------------------------------------


async def test_a_definite_failure_is_parked_after_its_tries_and_holds_only_its_own_order() -> None:
    store = Store(entries(settle("A", 1), final_release("A"), settle("B", 1), final_release("B")))
    users = Users()
    users.refused.add("A")
    outbox = Outbox(store, users, flush_delay=0, max_attempts=3, first_backoff=0.001)  # type: ignore[arg-type]
    await outbox.start()
    await outbox.idle(5)

    assert users.refusals == 3, "tried exactly max_attempts times, then left alone"
    assert users.calls == [("settle", "B:T1", "B:final")], "B went through; A's release waits behind its settlement"
    (parked,) = await outbox.parked()
    assert parked.entry.id == 1 and parked.attempts == 3
    assert "RESERVATION_MISMATCH" in parked.reason and "no reservation" in parked.reason
    assert outbox.pending("A") == 2 and [e.id for e in store.pending] == [1, 2]

    users.refused.clear()  # the cause is fixed
    retried = await outbox.retry(1)
    assert retried.entry.id == 1
    await outbox.idle(5)
    assert users.calls[-1] == ("settle", "A:T1", "A:final")
    assert await outbox.parked() == [] and store.pending == []
    await outbox.stop()


async def test_unavailable_is_retried_past_the_tries_of_a_definite_failure_and_never_parked() -> None:
    store = Store(entries(settle("A", 1)))
    users = Users(failures=6)
    outbox = Outbox(store, users, flush_delay=0, max_attempts=2, first_backoff=0.001)  # type: ignore[arg-type]
    await outbox.start()
    await outbox.idle(10)
    assert users.calls == [("settle", "A:T1")]
    assert store.parked == {}
    await outbox.stop()


async def test_a_parked_entry_stays_parked_across_a_restart_and_retrying_an_unknown_id_is_not_found() -> None:
    store = Store(entries(settle("A", 1), settle("B", 1)))
    users = Users()
    users.refused.add("A")
    first = Outbox(store, users, flush_delay=0, max_attempts=1, first_backoff=0.001)  # type: ignore[arg-type]
    await first.start()
    await first.idle(5)
    await first.stop()
    assert users.refusals == 1 and list(store.parked) == [1]

    again = Outbox(store, users, flush_delay=0, max_attempts=1, first_backoff=0.001)  # type: ignore[arg-type]
    await again.start()
    await again.idle(5)
    assert users.refusals == 1, "a restart does not run a parked entry again"
    try:
        await again.retry(2)
    except NotFound:
        pass
    else:  # pragma: no cover - the assertion that fails
        raise AssertionError("retrying an entry that is not parked must be NOT_FOUND")
    users.refused.clear()
    await again.retry(1)
    await again.idle(5)
    assert ("settle", "A:T1") in users.calls and store.pending == []
    await again.stop()
