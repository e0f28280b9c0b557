"""Order use cases over a fake exchange (port level) and a real journal in tmp_path."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Any

import pytest

from services.exchange_gateway.adapters.binance.schemas import parse_symbol_rules
from services.exchange_gateway.adapters.journal import SqlJournal
from services.exchange_gateway.domain.errors import ExchangeError, ExchangeOutcome, Failure
from services.exchange_gateway.domain.model import (
    ExchangeEvent,
    ExecType,
    Fill,
    OrderRequest,
    OrderSnapshot,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from services.exchange_gateway.service.market import Market
from services.exchange_gateway.service.orders import Orders
from services.exchange_gateway.service.ports import RequestKind
from shared.db import Database, create_db_engine
from shared.errors import Aborted, InvalidArgument, NotFound, ResourceExhausted
from shared.logs import security_log

from .test_validation import BTCUSDT

D = Decimal
UNKNOWN = ExchangeError("no answer", outcome=ExchangeOutcome.UNKNOWN, failure=Failure.UNKNOWN)
NO_SUCH = ExchangeError(
    "Order does not exist.", outcome=ExchangeOutcome.DEFINITE, failure=Failure.NO_SUCH_ORDER, code=-2013
)


class FakeExchange:
    """The Exchange port with scripted failures; remembers what it was asked."""

    recv_window_ms = 150

    def __init__(self) -> None:
        self.placed: dict[str, OrderSnapshot] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail_new: ExchangeError | None = None
        self.place_anyway = False  # the order reaches the book although the answer fails
        self.admit_error: Exception | None = None
        self.admitted: list[tuple[RequestKind, str]] = []  # (kind, fair-share key) of every admission
        self.new_order_keys: list[str] = []

    def now_ms(self) -> int:
        return int(time.time() * 1000)

    def deadline_after(self, seconds: float | None) -> float | None:
        return None if seconds is None else self.now_ms() + seconds * 1000

    async def admit(self, kind: RequestKind, deadline: float | None, *, fair_share_key: str = "") -> Any:
        self.admitted.append((kind, fair_share_key))
        if self.admit_error is not None:
            raise self.admit_error
        return object()

    async def new_order(
        self, request: OrderRequest, *, timestamp_ms, ticket, deadline, on_retimestamp, fair_share_key=""
    ) -> OrderSnapshot:
        self.calls.append(("new", request.client_order_id))
        self.new_order_keys.append(fair_share_key)
        await asyncio.sleep(0.01)
        snap = OrderSnapshot(
            request.client_order_id, len(self.placed) + 1, request.symbol, OrderStatus.NEW, D(0), D(0), 1
        )
        if self.fail_new is not None:
            if self.place_anyway:
                self.placed[request.client_order_id] = snap
            raise self.fail_new
        self.placed[request.client_order_id] = snap
        return snap

    async def cancel_order(self, symbol, client_order_id, exchange_order_id, *, ticket, deadline) -> OrderSnapshot:
        self.calls.append(("cancel", client_order_id))
        snap = self.placed.get(client_order_id)
        if snap is None or snap.status is not OrderStatus.NEW:
            raise ExchangeError(
                "Unknown order sent.", outcome=ExchangeOutcome.DEFINITE, failure=Failure.CANCEL_REJECTED
            )
        snap = OrderSnapshot(client_order_id, snap.exchange_order_id, symbol, OrderStatus.CANCELED, D(0), D(0), 2)
        self.placed[client_order_id] = snap
        return snap

    async def query_order(self, symbol, client_order_id, *, deadline=None) -> OrderSnapshot:
        self.calls.append(("query", client_order_id))
        if client_order_id not in self.placed:
            raise NO_SUCH
        return self.placed[client_order_id]

    async def open_orders(self, symbol: str | None = None) -> list[OrderSnapshot]:
        self.calls.append(("open", symbol or "*"))
        return [s for s in self.placed.values() if s.status is OrderStatus.NEW and symbol in (None, s.symbol)]

    async def order_trades(self, symbol: str, exchange_order_id: int) -> list[Fill]:
        return []

    async def balances(self, deadline=None):
        return []

    async def last_price(self, symbol: str, deadline=None) -> Decimal:
        return D("50000")

    async def load_exchange_info(self):
        return [parse_symbol_rules(BTCUSDT)]

    async def sync_time(self) -> None:
        return None


@pytest.fixture
async def setup(tmp_path):
    db = Database(create_db_engine(f"sqlite:///{tmp_path / 'gw.db'}"), name="test")
    journal = SqlJournal(db)
    journal.migrate()
    await journal.open()
    exchange = FakeExchange()
    market = Market(exchange)
    await market.refresh_rules()
    orders = Orders(journal, exchange, market, lambda raw: None, resolve_first_delay_s=0.02, not_placed_margin_ms=0)
    yield orders, exchange, journal
    await orders.close(0)
    await journal.close()
    db.close()


def limit(cid: str = "c1", price: str = "49000", qty: str = "0.01") -> OrderRequest:
    return OrderRequest(cid, "BTCUSDT", Side.BUY, OrderType.LIMIT, TimeInForce.GTC, D(qty), D(price), None)


async def wait_for_status(journal, cid: str, status: OrderStatus, timeout: float = 3.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        order = await journal.get_order(cid)
        if order is not None and order.status is status:
            return order
        await asyncio.sleep(0.01)
    raise AssertionError(f"{cid} never reached {status}; it is {order.status if order else None}")


async def test_a_repeated_client_order_id_is_sent_once(setup):
    orders, exchange, _ = setup
    first, second = await asyncio.gather(orders.submit(limit(), remaining_s=5), orders.submit(limit(), remaining_s=5))
    third = await orders.submit(limit(), remaining_s=5)
    assert first.status is second.status is third.status is OrderStatus.NEW
    assert exchange.calls == [("new", "c1")]


async def test_the_same_id_for_a_different_order_is_aborted(setup):
    orders, exchange, _ = setup
    await orders.submit(limit(), remaining_s=5)
    with pytest.raises(Aborted):
        await orders.submit(limit(price="48000"), remaining_s=5)
    assert exchange.calls == [("new", "c1")]


async def test_the_fair_share_key_goes_with_the_order_to_the_rate_limiter(setup):
    orders, exchange, _ = setup
    await orders.submit(limit(), remaining_s=5, fair_share_key="user-7f3a:eu.1")
    assert exchange.admitted == [(RequestKind.NEW_ORDER, "user-7f3a:eu.1")]
    assert exchange.new_order_keys == ["user-7f3a:eu.1"]  # for a new admission after a resync


async def test_a_resubmission_under_another_fair_share_key_is_the_same_order(setup):
    orders, exchange, _ = setup
    first = await orders.submit(limit(), remaining_s=5, fair_share_key="alice")
    again = await orders.submit(limit(), remaining_s=5, fair_share_key="bob")
    unkeyed = await orders.submit(limit(), remaining_s=5)
    assert again == first and unkeyed == first
    assert exchange.calls == [("new", "c1")]


@pytest.mark.parametrize("key", ["x" * 65, "user id", "user/7", "ünïcode", "a\nb"])
async def test_a_malformed_fair_share_key_is_invalid_and_nothing_is_sent(setup, key):
    orders, exchange, journal = setup
    with pytest.raises(InvalidArgument) as caught:
        await orders.submit(limit(), remaining_s=5, fair_share_key=key)
    assert caught.value.field == "fair_share_key"
    assert exchange.admitted == [] and exchange.calls == []
    assert await journal.get_order("c1") is None


async def test_a_fair_share_key_of_64_allowed_characters_is_accepted(setup):
    orders, exchange, _ = setup
    key = ("Az09_.:-" * 8)[:64]
    order = await orders.submit(limit(), remaining_s=5, fair_share_key=key)
    assert order.status is OrderStatus.NEW
    assert exchange.admitted == [(RequestKind.NEW_ORDER, key)]


async def test_filter_violations_send_and_journal_nothing(setup):
    orders, exchange, journal = setup
    with pytest.raises(InvalidArgument) as caught:
        await orders.submit(limit(price="49000.001"), remaining_s=5)
    assert caught.value.field == "price"
    assert exchange.calls == []
    assert await journal.get_order("c1") is None


async def test_rate_limit_refusal_journals_nothing(setup):
    orders, exchange, journal = setup
    exchange.admit_error = ResourceExhausted("later", retry_after=3.0)
    with pytest.raises(ResourceExhausted):
        await orders.submit(limit(), remaining_s=1)
    assert await journal.get_order("c1") is None


async def test_a_definite_refusal_is_rejected_with_an_execution(setup):
    orders, exchange, journal = setup
    exchange.fail_new = ExchangeError(
        "Account has insufficient balance for requested action.",
        outcome=ExchangeOutcome.DEFINITE,
        failure=Failure.REJECTED,
        code=-2010,
    )
    order = await orders.submit(limit(), remaining_s=5)
    assert order.status is OrderStatus.REJECTED
    assert "insufficient balance" in order.reject_reason
    executions = await journal.executions_after(0, 10)
    assert [(e.exec_type, e.reject_reason.split(":")[0]) for e in executions] == [(ExecType.REJECTED, "-2010")]


async def test_unknown_outcome_of_an_order_that_reached_the_book_resolves_to_new(setup):
    orders, exchange, journal = setup
    exchange.fail_new, exchange.place_anyway = UNKNOWN, True
    order = await orders.submit(limit(), remaining_s=5)
    assert order.status is OrderStatus.UNKNOWN
    resolved = await wait_for_status(journal, "c1", OrderStatus.NEW)
    assert resolved.exchange_order_id == 1
    assert [c for c in exchange.calls if c[0] == "new"] == [("new", "c1")]
    assert [e.exec_type for e in await journal.executions_after(0, 10)] == [ExecType.NEW]


async def test_unknown_outcome_proven_never_placed_after_the_recv_window(setup):
    orders, exchange, journal = setup
    exchange.fail_new = UNKNOWN
    started = time.time() * 1000
    order = await orders.submit(limit(), remaining_s=5)
    assert order.status is OrderStatus.UNKNOWN
    rejected = await wait_for_status(journal, "c1", OrderStatus.REJECTED)
    assert rejected.reject_reason.startswith("NOT_PLACED")
    # Not before the exchange's clock passed timestamp + recvWindow.
    assert rejected.update_time_ms >= started + exchange.recv_window_ms
    assert [c for c in exchange.calls if c[0] == "new"] == [("new", "c1")]
    assert sum(1 for c in exchange.calls if c[0] == "query") >= 1
    (execution,) = await journal.executions_after(0, 10)
    assert execution.exec_type is ExecType.REJECTED


async def test_cancel_returns_a_final_order_as_it_is(setup):
    orders, exchange, _ = setup
    await orders.submit(limit(), remaining_s=5)
    canceled = await orders.cancel("c1", remaining_s=5)
    assert canceled.status is OrderStatus.CANCELED
    again = await orders.cancel("c1", remaining_s=5)
    assert again.status is OrderStatus.CANCELED
    assert [c for c in exchange.calls if c[0] == "cancel"] == [("cancel", "c1")]


async def test_a_cancel_of_an_order_no_longer_open_learns_its_final_state(setup):
    orders, exchange, journal = setup
    await orders.submit(limit(), remaining_s=5)
    # The order filled at the exchange and the journal has not heard yet.
    fill = Fill(9, D("0.01"), D("49000"), D("490"), D("0.00001"), "BTC", True, 5)
    exchange.placed["c1"] = OrderSnapshot("c1", 1, "BTCUSDT", OrderStatus.FILLED, D("0.01"), D("490"), 5)
    exchange.order_trades = lambda symbol, oid: asyncio.sleep(0, [fill])  # type: ignore[method-assign]
    order = await orders.cancel("c1", remaining_s=5)
    assert order.status is OrderStatus.FILLED
    kinds = [(e.exec_type, e.trade_id) for e in await journal.executions_after(0, 10)]
    assert kinds == [(ExecType.NEW, 0), (ExecType.TRADE, 9)]


async def test_cancel_of_an_unknown_order_is_not_found(setup):
    orders, _, _ = setup
    with pytest.raises(NotFound):
        await orders.cancel("nope", remaining_s=5)


async def test_retries_and_duplicate_reports_of_an_order_no_longer_cached_use_the_journal(setup):
    orders, exchange, journal = setup
    journal.max_final_orders = 1
    orders.intake.events = lambda raw: raw  # the test hands in domain events
    for cid in ("c1", "c2"):
        await orders.submit(limit(cid), remaining_s=5)
        await orders.cancel(cid, remaining_s=5)
    assert journal.cached_order("c1") is None and journal.cached_order("c2") is not None
    sequence = journal.last_sequence

    retried = await orders.submit(limit("c1"), remaining_s=5)
    assert retried.status is OrderStatus.CANCELED
    with pytest.raises(Aborted):
        await orders.submit(limit("c1", price="48000"), remaining_s=5)
    assert [c for c in exchange.calls if c[0] == "new"] == [("new", "c1"), ("new", "c2")]

    for exec_type in (ExecType.NEW, ExecType.CANCELED):
        orders.on_event(ExchangeEvent("c1", 1, "BTCUSDT", exec_type, OrderStatus.CANCELED, D(0), 2))
    await journal.transact(lambda tx: None)  # after the reports (the journal keeps their order)
    assert journal.last_sequence == sequence


def foreign_snapshot(cid: str = "web_1", exchange_order_id: int = 50) -> OrderSnapshot:
    return OrderSnapshot(
        cid, exchange_order_id, "BTCUSDT", OrderStatus.NEW, D(0), D(0), 3, (), "", Side.SELL, "LIMIT", D("51000"), D(1)
    )


async def test_reconciliation_ends_an_order_the_exchange_forgot_and_keeps_the_others(setup, caplog):
    orders, exchange, journal = setup
    journal.on_anomalies = orders.anomalies_found
    await orders.submit(limit("c1"), remaining_s=5)
    await orders.submit(limit("c2"), remaining_s=5)
    del exchange.placed["c1"]  # the exchange was reset: it no longer knows c1
    exchange.calls.clear()
    with caplog.at_level("ERROR"):
        await orders.reconcile("test")
    forgot = await journal.get_order("c1")
    assert forgot is not None and forgot.status is OrderStatus.EXPIRED
    assert forgot.reject_reason.startswith("EXCHANGE_FORGOT:")
    assert (await journal.get_order("c2")).status is OrderStatus.NEW  # type: ignore[union-attr]
    assert exchange.calls == [("open", "*"), ("query", "c1")]  # one open-orders request for every symbol
    assert [a.client_order_id for a in [a for _, a in await journal.page_of_anomalies(0, 1000)]] == ["c1"]
    assert [r.client_order_id for r in caplog.records if r.name == security_log.name] == ["c1"]
    assert any(r.name == "exchange_gateway.orders" and r.orders == 1 for r in caplog.records)
    executions = await journal.executions_after(0, 10)
    assert [(e.client_order_id, e.exec_type) for e in executions][-1] == ("c1", ExecType.EXPIRED)


async def test_reconciliation_records_foreign_open_orders_even_with_nothing_of_its_own_open(setup):
    orders, exchange, journal = setup
    exchange.placed["web_1"] = foreign_snapshot()
    await orders.reconcile("test")
    await orders.reconcile("test")
    (found,) = await journal.foreign_orders()
    assert (found.client_order_id, found.exchange_order_id, found.side, found.price) == (
        "web_1",
        50,
        Side.SELL,
        D("51000"),
    )
    assert found.is_open and found.first_seen_ms <= found.last_seen_ms
    assert [c for c in exchange.calls if c[0] == "open"] == [("open", "*"), ("open", "*")]
    assert await journal.executions_after(0, 10) == []

    # Gone from the open orders and unknown to a query: no longer open, its last status kept.
    del exchange.placed["web_1"]
    await orders.reconcile("test")
    (gone,) = await journal.foreign_orders()
    assert not gone.is_open and gone.status is OrderStatus.NEW
    assert ("query", "web_1") in exchange.calls


async def test_with_the_cancel_policy_a_foreign_order_is_cancelled_and_the_cancel_recorded(setup):
    orders, exchange, journal = setup
    orders.foreign.cancel = True
    journal.on_foreign = orders.foreign.changed
    exchange.placed["web_1"] = foreign_snapshot()
    await orders.reconcile("test")

    async def cancelled() -> bool:
        (order,) = await journal.foreign_orders()
        return order.cancel_time_ms > 0

    deadline = time.monotonic() + 3
    while not await cancelled():
        assert time.monotonic() < deadline, "the foreign order was not cancelled"
        await asyncio.sleep(0.01)
    (order,) = await journal.foreign_orders()
    assert order.status is OrderStatus.CANCELED and not order.is_open and order.cancel_error == ""
    assert order.side is Side.SELL  # what the cancel answer does not say is kept
    assert [c for c in exchange.calls if c[0] == "cancel"] == [("cancel", "web_1")]


async def test_an_accepted_order_is_answered_before_it_is_journaled_and_a_read_has_it_journaled_at_once(setup):
    orders, _, journal = setup
    orders.placement.record_delay_s = 60.0  # the deferred journal entry waits (no other write starts one)
    answered = await orders.submit(limit(), remaining_s=5)
    assert answered.status is OrderStatus.NEW and answered.exchange_order_id
    assert journal.cached_order("c1").status is OrderStatus.UNKNOWN  # journaled as sent, not yet as answered
    # GetOrder waits for the placement's journal entry, and has it committed now rather than in 60 s.
    order = await asyncio.wait_for(orders.get("c1", refresh=False, remaining_s=30), 10)
    assert (order.status, order.exchange_order_id) == (OrderStatus.NEW, answered.exchange_order_id)
    assert [e.exec_type for e in await journal.executions_after(0, 10)] == [ExecType.NEW]
