"""Orders on the account that the gateway did not place: found, reported, cancelled by policy, never streamed."""

from __future__ import annotations

import logging

import grpc
import pytest

from trading.gateway.v1 import gateway_pb2

from .conftest import ADMIN, SERVICE, Gateway, Sim, StartGateway, eventually, pb

FOREIGN_MESSAGE = "order on the exchange account that the system did not place"


def reports(caplog: pytest.LogCaptureFixture, client_order_id: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "security" and r.getMessage() == FOREIGN_MESSAGE and r.client_order_id == client_order_id
    ]


async def foreign_by_id(gateway: Gateway, client_order_id: str) -> gateway_pb2.ForeignOrder | None:
    return next((o for o in await gateway.foreign_orders() if o.client_order_id == client_order_id), None)


async def test_an_order_placed_directly_on_the_account_is_listed_as_foreign_and_its_fills_are_not_streamed(
    gateway: Gateway, sim: Sim, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    await gateway.submit("mine-1", price="49000.00")
    placed = await sim.place_directly(
        symbol="ETHUSDT",
        side="SELL",
        type="LIMIT",
        timeInForce="GTC",
        quantity="0.5",
        price="3100.00",
        newClientOrderId="web_manual_1",
    )
    await gateway.running.internals.orders.reconcile("test")

    listed = await gateway.foreign_orders()
    assert [o.client_order_id for o in listed] == ["web_manual_1"]  # never the gateway's own order
    (found,) = listed
    assert (found.symbol, found.exchange_order_id, found.side, found.type) == (
        "ETHUSDT",
        placed["orderId"],
        gateway_pb2.SIDE_SELL,
        "LIMIT",
    )
    assert (found.price, found.quantity, found.executed_quantity) == ("3100.00000000", "0.50000000", "0.00000000")
    assert found.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW and found.open
    assert found.first_seen_time.seconds > 0
    assert found.last_seen_time.ToMilliseconds() >= found.first_seen_time.ToMilliseconds()
    assert not found.HasField("cancel_time")
    assert len(reports(caplog, "web_manual_1")) == 1

    # It trades: its record follows, and nothing reaches the execution stream.
    await sim.price("ETHUSDT", "3100.00", volume="0.2")

    async def partly() -> bool:
        order = await foreign_by_id(gateway, "web_manual_1")
        return order is not None and order.executed_quantity == "0.20000000"

    await eventually(partly, what="the foreign order's partial fill to be recorded")
    assert (await foreign_by_id(gateway, "web_manual_1")).status == gateway_pb2.EXCHANGE_ORDER_STATUS_PARTIALLY_FILLED
    await sim.price("ETHUSDT", "3100.00")

    async def filled() -> bool:
        order = await foreign_by_id(gateway, "web_manual_1")
        return order is not None and order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED

    await eventually(filled, what="the foreign order's fill to be recorded")
    await gateway.running.internals.orders.reconcile("test")
    done = await foreign_by_id(gateway, "web_manual_1")
    assert done is not None and done.executed_quantity == "0.50000000" and not done.open
    assert done.status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED

    executions = await gateway.all_executions()
    assert [(e.client_order_id, e.execution_type) for e in executions] == [("mine-1", gateway_pb2.EXECUTION_TYPE_NEW)]
    assert len(reports(caplog, "web_manual_1")) == 1  # reported once, however often it is seen


async def test_a_foreign_order_that_ends_while_nobody_listens_is_marked_with_its_last_status(
    start_gateway: StartGateway, sim: Sim
):
    gateway = await start_gateway()
    placed = await sim.place_directly(
        symbol="BNBUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="1", price="590.00"
    )
    await gateway.running.internals.orders.reconcile("test")
    assert (await foreign_by_id(gateway, placed["clientOrderId"])).open
    await gateway.channel.close()
    await gateway.running.stop()

    status, _ = await sim.signed("DELETE", "/api/v3/order", {"symbol": "BNBUSDT", "orderId": str(placed["orderId"])})
    assert status == 200
    again = await start_gateway()  # its first reconciliation no longer sees the order open
    await again.running.internals.orders.reconcile("test")
    ended = await foreign_by_id(again, placed["clientOrderId"])
    assert ended is not None and not ended.open
    assert ended.status == gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED


async def test_with_the_cancel_policy_foreign_orders_are_cancelled_by_symbol_and_order_id(
    start_gateway: StartGateway, sim: Sim, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    # One placed before the gateway starts (found by the reconciliation at start), one while it runs
    # (found on the user data stream).
    early = await sim.place_directly(
        symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.01", price="48000.00"
    )
    gateway = await start_gateway(foreign_orders="cancel")
    sent = gateway.record_requests()
    late = await sim.place_directly(
        symbol="ETHUSDT", side="SELL", type="LIMIT", timeInForce="GTC", quantity="1", price="3200.00"
    )

    async def cancelled() -> bool:
        statuses = [(await sim.orders(clientOrderId=o["clientOrderId"]))[0]["status"] for o in (early, late)]
        return statuses == ["CANCELED", "CANCELED"]

    await eventually(cancelled, what="both foreign orders to be cancelled at the exchange")
    await gateway.running.internals.orders.reconcile("test")

    for placed in (early, late):
        recorded = await foreign_by_id(gateway, placed["clientOrderId"])
        assert recorded is not None
        assert recorded.status == gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED and not recorded.open
        assert recorded.HasField("cancel_time") and recorded.cancel_error == ""
    deletes = [params for method, path, params in sent if (method, path) == ("DELETE", "/api/v3/order")]
    assert {(p["symbol"], p["orderId"]) for p in deletes} >= {("ETHUSDT", str(late["orderId"]))}
    assert all("origClientOrderId" not in p for p in deletes)
    assert len(reports(caplog, late["clientOrderId"])) == 1
    assert await gateway.all_executions() == []


async def test_the_account_open_orders_are_fetched_once_per_reconciliation_for_every_symbol(gateway: Gateway, sim: Sim):
    await gateway.submit("once-btc", symbol="BTCUSDT", price="49000.00")
    await gateway.submit("once-eth", symbol="ETHUSDT", price="2900.00", quantity="0.1")
    await gateway.submit("once-bnb", symbol="BNBUSDT", price="590.00", quantity="1")
    sent = gateway.record_requests()

    await gateway.running.internals.orders.reconcile("test")
    await gateway.running.internals.orders.reconcile("test")

    open_orders = [params for method, path, params in sent if path == "/api/v3/openOrders"]
    assert len(open_orders) == 2  # one per reconciliation
    assert all(method == "GET" for method, path, _ in sent if path == "/api/v3/openOrders")
    assert all("symbol" not in params for params in open_orders)  # every symbol at once (weight 80)
    assert [path for _, path, _ in sent if path != "/api/v3/openOrders"] == []  # all three were listed open


async def test_foreign_orders_and_anomalies_are_listed_for_the_service_token_too(gateway: Gateway):
    orders = await gateway.stub.ListForeignOrders(pb.ListForeignOrdersRequest(), metadata=SERVICE)
    anomalies = await gateway.stub.ListAnomalies(pb.ListAnomaliesRequest(), metadata=SERVICE)
    assert list(orders.orders) == [] and list(anomalies.anomalies) == []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.ListAnomalies(pb.ListAnomaliesRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_foreign_orders_are_listed_a_page_at_a_time_and_a_token_keeps_its_filter(gateway: Gateway, sim: Sim):
    for n, price in enumerate(("3100.00", "3110.00", "3120.00")):
        await sim.place_directly(
            symbol="ETHUSDT",
            side="SELL",
            type="LIMIT",
            timeInForce="GTC",
            quantity="0.1",
            price=price,
            newClientOrderId=f"web_page_{n}",
        )
    await gateway.running.internals.orders.reconcile("test")

    everything = [o.client_order_id for o in await gateway.foreign_orders(page_size=1000)]
    assert sorted(everything) == ["web_page_0", "web_page_1", "web_page_2"]
    first = await gateway.stub.ListForeignOrders(pb.ListForeignOrdersRequest(page_size=2), metadata=ADMIN)
    assert len(first.orders) == 2 and first.next_page_token
    assert [o.client_order_id for o in await gateway.foreign_orders(page_size=2)] == everything
    assert [o.client_order_id for o in await gateway.foreign_orders(page_size=1, open_only=True)] == everything

    bad = [
        (pb.ListForeignOrdersRequest(page_size=-1), "page_size"),
        (pb.ListForeignOrdersRequest(page_token="not-a-token"), "page_token"),
        (pb.ListForeignOrdersRequest(page_token=first.next_page_token, open_only=True), "page_token"),
    ]
    for request, field in bad:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await gateway.stub.ListForeignOrders(request, metadata=ADMIN)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (refused.value.details() or "").startswith(f"{field}:"), refused.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await gateway.stub.ListAnomalies(pb.ListAnomaliesRequest(page_token=first.next_page_token), metadata=ADMIN)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
