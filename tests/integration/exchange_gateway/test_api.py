"""The gRPC contract against the simulator: orders, rules, prices, balances, errors and auth."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from shared.errors import InvalidArgument
from shared.grpc_errors import from_rpc_error
from trading.gateway.v1 import gateway_pb2

from .conftest import ADMIN, SERVICE, Gateway, Sim, eventually, limit_request, pb


async def test_limit_order_is_placed_journaled_and_cancelled(gateway: Gateway, sim: Sim):
    order = await gateway.submit("api-1")
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW
    assert order.exchange_order_id > 0
    assert order.time_in_force == gateway_pb2.TIME_IN_FORCE_GTC
    assert order.price == "49000.00000000"
    (at_exchange,) = await sim.orders(clientOrderId="api-1")
    assert at_exchange["status"] == "NEW"

    canceled = await gateway.cancel("api-1")
    assert canceled.status == gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED
    again = await gateway.cancel("api-1")  # already final: returned as it is
    assert again.status == gateway_pb2.EXCHANGE_ORDER_STATUS_CANCELED

    executions = await gateway.executions(0, 2)
    assert [(e.sequence, e.execution_type) for e in executions] == [
        (1, gateway_pb2.EXECUTION_TYPE_NEW),
        (2, gateway_pb2.EXECUTION_TYPE_CANCELED),
    ]


async def test_market_order_fills_and_reports_its_trade(gateway: Gateway, sim: Sim):
    order = await gateway.submit("api-mkt", type=gateway_pb2.ORDER_TYPE_MARKET, price="")
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED
    assert order.executed_quantity == "0.01000000"
    new, trade = await gateway.executions(0, 2)
    assert new.execution_type == gateway_pb2.EXECUTION_TYPE_NEW
    assert trade.execution_type == gateway_pb2.EXECUTION_TYPE_TRADE
    assert trade.trade_id > 0 and trade.commission_asset == "BTC"
    assert trade.order_status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED
    assert trade.cumulative_quantity == "0.01000000"
    # The user data stream reported the same trade: still journaled once.
    await gateway.running.internals.journal.transact(lambda tx: None)
    assert len(await gateway.all_executions(settle=0.3)) == 2


async def test_submit_is_idempotent_on_client_order_id(gateway: Gateway, sim: Sim):
    first = await gateway.submit("api-idem")
    second = await gateway.submit("api-idem")
    assert first.exchange_order_id == second.exchange_order_id
    assert len(await sim.orders(clientOrderId="api-idem")) == 1
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.submit("api-idem", price="48000.00")
    assert caught.value.code() == grpc.StatusCode.ABORTED


async def test_stop_limit_is_sent_as_stop_loss_limit(gateway: Gateway, sim: Sim):
    order = await gateway.submit(
        "api-stop",
        side=gateway_pb2.SIDE_SELL,
        type=gateway_pb2.ORDER_TYPE_STOP_LIMIT,
        price="48000.00",
        stop_price="48100.00",
        time_in_force=gateway_pb2.TIME_IN_FORCE_GTC,
    )
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_NEW
    (at_exchange,) = await sim.orders(clientOrderId="api-stop")
    assert at_exchange["type"] == "STOP_LOSS_LIMIT"
    assert at_exchange["stopPrice"] == "48100.00000000"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"price": "49000.001"}, "price"),
        ({"quantity": "0.000015"}, "quantity"),
        ({"quantity": "0.00001", "price": "40000"}, "quantity"),
        ({"price": "300000"}, "price"),
        ({"symbol": "NOPEUSDT"}, "symbol"),
        ({"type": gateway_pb2.ORDER_TYPE_STOP_LIMIT}, "stop_price"),
        (
            {"type": gateway_pb2.ORDER_TYPE_MARKET, "time_in_force": gateway_pb2.TIME_IN_FORCE_IOC, "price": ""},
            "time_in_force",
        ),
    ],
)
async def test_invalid_orders_are_refused_with_the_field_and_nothing_sent(gateway: Gateway, sim: Sim, fields, field):
    before = (await sim.stats())["requests"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await gateway.stub.SubmitOrder(limit_request("api-bad", **fields), metadata=SERVICE, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    error = from_rpc_error(caught.value)
    assert isinstance(error, InvalidArgument) and error.field == field
    stats = await sim.stats()
    # Nothing reached the exchange (the price used for the checks may have been fetched once).
    assert stats["orders_accepted"] == stats["orders_rejected"] == 0
    assert stats["requests"] - before <= 2
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await gateway.get("api-bad")
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_refusal_by_the_exchange_is_rejected(gateway: Gateway, sim: Sim):
    await sim.post("reset", {"balances": {"USDT": "100", "BTC": "0"}})
    order = await gateway.submit("api-poor")  # 490 USDT; the account holds 100
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_REJECTED
    assert "-2010" in order.reject_reason
    (execution,) = await gateway.executions(0, 1)
    assert execution.execution_type == gateway_pb2.EXECUTION_TYPE_REJECTED


async def test_rules_prices_balances_and_rate_limit_status(gateway: Gateway, sim: Sim):
    stub = gateway.stub
    rules = (await stub.GetSymbolRules(pb.GetSymbolRulesRequest(symbol="BTCUSDT"), metadata=ADMIN)).rules
    assert rules.tick_size == "0.01000000" and rules.step_size == "0.00001000"
    assert rules.min_notional == "5.00000000" and "STOP_LOSS_LIMIT" in rules.order_types
    # The verdicts in the contract's terms: trading, and STOP_LOSS_LIMIT as the contract's STOP_LIMIT.
    assert rules.trading and gateway_pb2.ORDER_TYPE_STOP_LIMIT in rules.allowed_types
    listed = (await stub.ListSymbolRules(pb.ListSymbolRulesRequest(), metadata=ADMIN)).rules
    assert [r.symbol for r in listed] == ["BNBUSDT", "BTCUSDT", "ETHUSDT"]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetSymbolRules(pb.GetSymbolRulesRequest(symbol="NOPE"), metadata=ADMIN)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    sent = gateway.record_requests()
    prices = await asyncio.gather(
        *(stub.GetLastPrice(pb.GetLastPriceRequest(symbol="ETHUSDT"), metadata=SERVICE) for _ in range(5))
    )
    assert {p.price for p in prices} == {"3000.00000000"}
    fetched = [params for _, path, params in sent if path == "/api/v3/ticker/price"]
    assert fetched == [{"symbol": "ETHUSDT"}]  # one fetch for all of them: shared, then cached
    await sim.price("ETHUSDT", "3001.00")

    async def refreshed() -> bool:
        reply = await stub.GetLastPrice(pb.GetLastPriceRequest(symbol="ETHUSDT"), metadata=SERVICE)
        return reply.price == "3001.00000000"

    await eventually(refreshed, timeout=3, what="a fresh price after the cache expired")

    balances = (await stub.GetAccountBalances(pb.GetAccountBalancesRequest(), metadata=ADMIN)).balances
    assert [b.asset for b in balances] == sorted(b.asset for b in balances)
    assert {b.asset for b in balances} >= {"BTC", "USDT"}

    status = await stub.GetRateLimitStatus(pb.GetRateLimitStatusRequest(), metadata=ADMIN)
    kinds = {(u.rate_limit_type, u.interval, u.interval_num) for u in status.limits}
    assert kinds == {
        ("REQUEST_WEIGHT", "MINUTE", 1),
        ("ORDERS", "SECOND", 10),
        ("ORDERS", "DAY", 1),
        ("RAW_REQUESTS", "MINUTE", 5),
    }
    weight = next(u for u in status.limits if u.rate_limit_type == "REQUEST_WEIGHT")
    assert weight.used >= 20 and weight.limit == 6000  # exchangeInfo alone weighs 20
    assert status.http_429_count == 0 and status.queue_depth == 0


async def test_get_order_with_refresh_asks_the_exchange(gateway: Gateway, sim: Sim):
    await gateway.submit("api-refresh")
    await sim.price("BTCUSDT", "48999.00")  # fills the resting buy
    refreshed = await gateway.get("api-refresh", refresh=True)
    assert refreshed.status == gateway_pb2.EXCHANGE_ORDER_STATUS_FILLED


@pytest.mark.parametrize(
    ("metadata", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Bearer wrong-token"),), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED),
        (ADMIN, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_trading_rpcs_need_the_service_token(gateway: Gateway, metadata, code):
    with pytest.raises(grpc.aio.AioRpcError) as submit:
        await gateway.stub.SubmitOrder(limit_request("api-auth"), metadata=metadata, timeout=5)
    assert submit.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as cancel:
        await gateway.stub.CancelOrder(pb.CancelOrderRequest(client_order_id="x"), metadata=metadata, timeout=5)
    assert cancel.value.code() == code


async def test_read_only_rpcs_accept_the_admin_token_and_refuse_strangers(gateway: Gateway):
    await gateway.stub.GetRateLimitStatus(pb.GetRateLimitStatusRequest(), metadata=ADMIN)
    stream = gateway.stub.StreamExecutions(pb.StreamExecutionsRequest(after_sequence=0), metadata=())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_negative_after_sequence_is_invalid(gateway: Gateway):
    stream = gateway.stub.StreamExecutions(pb.StreamExecutionsRequest(after_sequence=-1), metadata=SERVICE)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_an_ioc_order_that_cannot_fill_expires(gateway: Gateway):
    order = await gateway.submit("api-ioc", price="49000.00", time_in_force=gateway_pb2.TIME_IN_FORCE_IOC)
    assert order.status == gateway_pb2.EXCHANGE_ORDER_STATUS_EXPIRED
    assert order.time_in_force == gateway_pb2.TIME_IN_FORCE_IOC
    new, expired = await gateway.executions(0, 2)
    assert new.execution_type == gateway_pb2.EXECUTION_TYPE_NEW
    assert expired.execution_type == gateway_pb2.EXECUTION_TYPE_EXPIRED
    assert expired.order_status == gateway_pb2.EXCHANGE_ORDER_STATUS_EXPIRED and expired.reject_reason
