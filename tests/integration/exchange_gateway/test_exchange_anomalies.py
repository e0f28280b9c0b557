"""An exchange that reuses trade ids or forgets its orders: anomalies, never a silent drop, never a wrong settlement."""

from __future__ import annotations

import asyncio
import logging

import pytest

from trading.gateway.v1 import gateway_pb2

from .conftest import ADMIN, Gateway, Sim, StartGateway, eventually, pb
from .test_reconciliation import check_journal, sim_trade_ids

TRADE = gateway_pb2.EXECUTION_TYPE_TRADE
EXPIRED = gateway_pb2.EXECUTION_TYPE_EXPIRED
MARKET = gateway_pb2.ORDER_TYPE_MARKET
CLASH = gateway_pb2.ANOMALY_KIND_TRADE_KEY_CLASH
FORGOT = gateway_pb2.ANOMALY_KIND_EXCHANGE_FORGOT_ORDER


def security_errors(caplog: pytest.LogCaptureFixture, kind: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "security" and r.levelno == logging.ERROR and getattr(r, "kind", "") == kind
    ]


def trade_report(execution: gateway_pb2.Execution, order_type: str = "MARKET") -> dict[str, object]:
    """The user data stream's executionReport of a streamed trade, as the exchange sent it."""
    return {
        "e": "executionReport",
        "s": execution.symbol,
        "c": execution.client_order_id,
        "S": "BUY",
        "o": order_type,
        "x": "TRADE",
        "X": "FILLED",
        "i": execution.exchange_order_id,
        "l": execution.last_quantity,
        "z": execution.cumulative_quantity,
        "L": execution.last_price,
        "n": execution.commission,
        "N": execution.commission_asset,
        "T": execution.transaction_time.ToMilliseconds(),
        "t": execution.trade_id,
        "m": execution.is_maker,
        "Z": execution.cumulative_quote_quantity,
        "Y": execution.last_quote_quantity,
    }


async def test_a_trade_key_reused_with_other_content_is_an_anomaly_and_is_not_streamed(
    gateway: Gateway, sim: Sim, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    first = await gateway.submit("clash-1", type=MARKET, price="")
    assert first.status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED
    _, traded = await gateway.executions(0, 2)
    assert traded.execution_type == TRADE

    # The exchange counts its trade ids from an old value again (as after a reset; orders are kept here).
    sim.exchange.markets["BTCUSDT"].next_trade_id = traded.trade_id
    second = await gateway.submit("clash-2", type=MARKET, price="", quantity="0.02")
    (at_exchange,) = await sim.orders(clientOrderId="clash-2")
    assert at_exchange["status"] == "FILLED"
    assert sim_trade_ids(sim, {"clash-2"}) == {traded.trade_id}

    # The order response, the user data stream and myTrades all report the clashing trade: one record.
    async def recorded() -> bool:
        return len(await gateway.anomalies()) == 1

    await eventually(recorded, what="the clash to be recorded")
    await asyncio.sleep(1.5)  # the order's sync has fetched myTrades again meanwhile
    (anomaly,) = await gateway.anomalies()
    assert (anomaly.kind, anomaly.symbol, anomaly.trade_id, anomaly.client_order_id) == (
        CLASH,
        "BTCUSDT",
        traded.trade_id,
        "clash-2",
    )
    assert "client_order_id=clash-1" in anomaly.detail and "client_order_id=clash-2" in anomaly.detail
    assert anomaly.first_seen_time.seconds > 0
    (event,) = security_errors(caplog, "TRADE_KEY_CLASH")
    assert event.client_order_id == "clash-2"

    # Not streamed: the order service never settles it; the order stays short of that trade.
    executions = await gateway.all_executions()
    check_journal(executions)
    assert [(e.client_order_id, e.execution_type) for e in executions if e.client_order_id == "clash-2"] == [
        ("clash-2", gateway_pb2.EXECUTION_TYPE_NEW)
    ]
    held = await gateway.get("clash-2")
    assert held.executed_quantity == "0.00000000"
    assert held.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW
    assert second.executed_quantity == "0.00000000"

    # An identical repeat of the first trade (the stream reporting it again) is a silent duplicate.
    gateway.running.internals.orders.on_event(trade_report(traded))
    await gateway.running.internals.journal.transact(lambda tx: None)
    await gateway.running.internals.orders.reconcile("test")
    assert len(await gateway.all_executions(settle=0.3)) == len(executions)
    assert len(await gateway.anomalies()) == 1
    assert len(security_errors(caplog, "TRADE_KEY_CLASH")) == 1


async def test_after_the_exchange_restarts_new_orders_fill_and_its_forgotten_orders_expire_at_start(
    start_gateway: StartGateway, sim: Sim, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    first = await start_gateway()
    await first.submit("fg-part", price="49000.00")
    await first.submit("fg-rest", price="48000.00")
    await first.submit("fg-mkt", type=MARKET, price="")
    await sim.price("BTCUSDT", "48999.00", volume="0.004")  # fg-part fills 0.004 of 0.01
    before = await first.executions(0, 5)  # NEW x3, fg-mkt's trade, fg-part's trade
    assert sorted(e.client_order_id for e in before if e.execution_type == TRADE) == ["fg-mkt", "fg-part"]
    await first.channel.close()
    await first.running.stop()

    await sim.restart()  # the exchange forgets every order
    second = await start_gateway()

    async def expired() -> bool:
        statuses = [(await second.get(cid)).status for cid in ("fg-part", "fg-rest")]
        return statuses == [gateway_pb2.EXCHANGE_ORDER_STATUS_EXPIRED] * 2

    await eventually(expired, what="the forgotten orders to be ended")
    assert (await second.get("fg-mkt")).status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED

    after = await second.submit("fg-after", type=MARKET, price="")
    assert after.status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED
    resting = await second.submit("fg-after-rest", price="48500.00")
    await sim.price("BTCUSDT", "48400.00")

    async def filled() -> bool:
        return (await second.get("fg-after-rest")).status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED

    await eventually(filled, what="the order placed after the restart to fill")
    assert resting.exchange_order_id > 0

    executions = await second.all_executions()
    check_journal(executions)
    assert executions[: len(before)] == before
    ended = {e.client_order_id: e for e in executions if e.execution_type == EXPIRED}
    assert set(ended) == {"fg-part", "fg-rest"}
    assert all(e.reject_reason.startswith("EXCHANGE_FORGOT:") for e in ended.values())
    assert ended["fg-part"].cumulative_quantity == "0.00400000"  # what was traded is settled, the rest released
    assert ended["fg-rest"].cumulative_quantity == "0.00000000"
    part_trade = next(e for e in executions if e.execution_type == TRADE and e.client_order_id == "fg-part")
    assert part_trade.sequence < ended["fg-part"].sequence
    # No trade lost: every trade the new exchange made for the new orders is streamed.
    new_trades = {
        e.trade_id for e in executions if e.execution_type == TRADE and e.client_order_id.startswith("fg-after")
    }
    assert new_trades == sim_trade_ids(sim, {"fg-after", "fg-after-rest"})
    assert len(new_trades) >= 2

    anomalies = await second.anomalies()
    assert sorted((a.kind, a.client_order_id) for a in anomalies) == [(FORGOT, "fg-part"), (FORGOT, "fg-rest")]
    assert all("Order does not exist" in a.detail and a.trade_id == 0 for a in anomalies)
    assert {r.client_order_id for r in security_errors(caplog, "EXCHANGE_FORGOT_ORDER")} == {"fg-part", "fg-rest"}
    said = [r for r in caplog.records if r.name == "exchange_gateway.orders" and r.levelno == logging.ERROR]
    assert len(said) == 1 and said[0].orders == 2 and "EXCHANGE_FORGOT" in said[0].getMessage()


async def test_an_exchange_reset_while_connected_is_caught_by_the_reconciliation_after_the_reconnect(
    start_gateway: StartGateway, sim: Sim
):
    gateway = await start_gateway(ws_reconnect_max_s=0.5)
    await gateway.submit("live-rest", price="48000.00")
    connects = gateway.running.internals.user_stream.connects
    await sim.restart()

    async def expired() -> bool:
        return (await gateway.get("live-rest")).status == gateway_pb2.EXCHANGE_ORDER_STATUS_EXPIRED

    await eventually(expired, timeout=15, what="the forgotten order to be ended after the reconnect")
    assert gateway.running.internals.user_stream.connects > connects
    (anomaly,) = await gateway.anomalies()
    assert (anomaly.kind, anomaly.client_order_id) == (FORGOT, "live-rest")

    after = await gateway.submit("live-after", type=MARKET, price="")
    assert after.status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED
    executions = await gateway.all_executions()
    check_journal(executions)
    assert [e.execution_type for e in executions if e.client_order_id == "live-after"] == [
        gateway_pb2.EXECUTION_TYPE_NEW,
        TRADE,
    ]


async def test_a_reset_that_sets_the_ids_back_gives_anomalies_and_never_a_silent_drop(gateway: Gateway, sim: Sim):
    await gateway.submit("back-mkt", type=MARKET, price="")
    await gateway.submit("back-open", price="48000.00")
    first = await gateway.executions(0, 3)  # back-mkt NEW and TRADE, back-open NEW
    (traded,) = [e for e in first if e.execution_type == TRADE]

    # The exchange forgets everything and hands out the same order and trade ids again.
    await sim.post("reset", {"next_order_id": traded.exchange_order_id, "next_trade_id": traded.trade_id})
    await gateway.running.internals.orders.reconcile("test")
    assert (await gateway.get("back-open")).status == gateway_pb2.EXCHANGE_ORDER_STATUS_EXPIRED

    after = await gateway.submit("back-after", type=MARKET, price="")
    assert after.exchange_order_id == traded.exchange_order_id
    assert sim_trade_ids(sim, {"back-after"}) == {traded.trade_id}

    async def both() -> bool:
        return len(await gateway.anomalies()) == 2

    await eventually(both, what="the forgotten order and the clash to be recorded")
    anomalies = sorted((a.kind, a.client_order_id, a.trade_id) for a in await gateway.anomalies())
    assert anomalies == [(CLASH, "back-after", traded.trade_id), (FORGOT, "back-open", 0)]
    first = await gateway.stub.ListAnomalies(pb.ListAnomaliesRequest(page_size=1), metadata=ADMIN)
    assert len(first.anomalies) == 1 and first.next_page_token
    assert await gateway.anomalies(page_size=1) == await gateway.anomalies()  # one a page, in the same order
    executions = await gateway.all_executions()
    check_journal(executions)
    assert [e.execution_type for e in executions if e.client_order_id == "back-after"] == [
        gateway_pb2.EXECUTION_TYPE_NEW
    ]
