"""Enum and type mapping between the domain and Binance's wire names."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.exchange_gateway.adapters.binance.enums import (
    ORDER_TYPE_EXT_TO_INT,
    ORDER_TYPE_INT_TO_EXT,
    order_status,
)
from services.exchange_gateway.adapters.binance.exchange import event_from_report, order_params, snapshot
from services.exchange_gateway.adapters.binance.schemas import BinanceOrder
from services.exchange_gateway.api import codec
from services.exchange_gateway.domain.model import (
    AnomalyKind,
    ExecType,
    OrderRequest,
    OrderStatus,
    OrderType,
    Side,
    TimeInForce,
)
from trading.gateway.v1 import gateway_pb2

D = Decimal


@pytest.mark.parametrize(
    ("internal", "binance"),
    [
        (OrderType.MARKET, "MARKET"),
        (OrderType.LIMIT, "LIMIT"),
        (OrderType.STOP, "STOP_LOSS"),
        (OrderType.STOP_LIMIT, "STOP_LOSS_LIMIT"),
    ],
)
def test_order_types_map_both_ways(internal, binance):
    assert ORDER_TYPE_INT_TO_EXT[internal] == binance
    assert ORDER_TYPE_EXT_TO_INT[binance] is internal


@pytest.mark.parametrize(
    ("binance", "internal"),
    [
        ("NEW", OrderStatus.NEW),
        ("PARTIALLY_FILLED", OrderStatus.PARTIALLY_FILLED),
        ("FILLED", OrderStatus.FILLED),
        ("CANCELED", OrderStatus.CANCELED),
        ("REJECTED", OrderStatus.REJECTED),
        ("EXPIRED", OrderStatus.EXPIRED),
        ("EXPIRED_IN_MATCH", OrderStatus.EXPIRED),
        ("PENDING_CANCEL", OrderStatus.NEW),
    ],
)
def test_order_statuses(binance, internal):
    assert order_status(binance) is internal


def test_stop_limit_parameters():
    request = OrderRequest(
        "cid-1", "BTCUSDT", Side.SELL, OrderType.STOP_LIMIT, TimeInForce.IOC, D("0.01000"), D("48000.00"), D("48100")
    )
    assert order_params(request) == [
        ("symbol", "BTCUSDT"),
        ("side", "SELL"),
        ("type", "STOP_LOSS_LIMIT"),
        ("timeInForce", "IOC"),
        ("quantity", "0.01"),
        ("price", "48000"),
        ("stopPrice", "48100"),
        ("newClientOrderId", "cid-1"),
    ]


def test_market_and_stop_send_no_time_in_force_or_price():
    market = OrderRequest("m", "BTCUSDT", Side.BUY, OrderType.MARKET, None, D("1"), None, None)
    names = [k for k, _ in order_params(market)]
    assert "timeInForce" not in names and "price" not in names and "stopPrice" not in names
    stop = OrderRequest("s", "BTCUSDT", Side.SELL, OrderType.STOP, None, D("1"), None, D("40000"))
    assert ("type", "STOP_LOSS") in order_params(stop)
    assert ("stopPrice", "40000") in order_params(stop)


def test_full_response_snapshot_with_fills():
    answer = BinanceOrder.parse(
        {
            "symbol": "BTCUSDT",
            "orderId": 28,
            "clientOrderId": "cid-1",
            "transactTime": 1507725176595,
            "origQty": "10.00000000",
            "executedQty": "10.00000000",
            "cummulativeQuoteQty": "39990.00000000",
            "status": "FILLED",
            "type": "MARKET",
            "side": "SELL",
            "fills": [
                {"price": "4000.00", "qty": "1.0", "commission": "4.0", "commissionAsset": "USDT", "tradeId": 56},
                {"price": "3999.00", "qty": "9.0", "commission": "35.991", "commissionAsset": "USDT", "tradeId": 57},
            ],
        }
    )
    snap = snapshot(answer)
    assert snap.status is OrderStatus.FILLED
    assert snap.exchange_order_id == 28
    assert [f.trade_id for f in snap.fills] == [56, 57]
    assert snap.fills[1].quote_quantity == D("35991.00")


def test_cancel_answer_reports_the_orders_own_client_id():
    answer = BinanceOrder.parse(
        {
            "symbol": "BTCUSDT",
            "orderId": 5,
            "origClientOrderId": "mine",
            "clientOrderId": "cancel-xyz",
            "status": "CANCELED",
        }
    )
    assert snapshot(answer).client_order_id == "mine"


def report(**fields):
    base = {
        "e": "executionReport",
        "s": "BTCUSDT",
        "c": "cid-1",
        "S": "BUY",
        "o": "LIMIT",
        "C": "",
        "x": "TRADE",
        "X": "PARTIALLY_FILLED",
        "r": "NONE",
        "i": 7,
        "l": "0.5",
        "z": "0.5",
        "L": "50000",
        "n": "0.0005",
        "N": "BTC",
        "T": 1700000000000,
        "t": 42,
        "m": True,
        "Z": "25000",
        "Y": "25000",
    }
    base.update(fields)
    return base


def test_trade_event():
    event = event_from_report(report())
    assert event is not None
    assert event.exec_type is ExecType.TRADE
    assert event.fill is not None and event.fill.trade_id == 42 and event.fill.is_maker
    assert event.cum_qty == D("0.5")


def test_cancel_event_uses_the_original_client_order_id():
    event = event_from_report(report(x="CANCELED", X="CANCELED", c="cancel-req", C="cid-1", t=-1, l="0"))
    assert event is not None and event.client_order_id == "cid-1" and event.fill is None


def test_events_that_change_nothing_we_journal_are_skipped():
    assert event_from_report({"e": "outboundAccountPosition"}) is None
    assert event_from_report(report(x="REPLACED")) is None
    assert event_from_report(report(x="TRADE_PREVENTION", X="PARTIALLY_FILLED")) is None
    expired = event_from_report(report(x="TRADE_PREVENTION", X="EXPIRED_IN_MATCH"))
    assert expired is not None and expired.exec_type is ExecType.EXPIRED


def test_proto_enums_round_trip():
    assert codec.SIDE_IN[gateway_pb2.SIDE_SELL] is Side.SELL
    assert codec.TYPE_IN[gateway_pb2.ORDER_TYPE_STOP] is OrderType.STOP
    assert codec.TIF_IN.get(gateway_pb2.TIME_IN_FORCE_UNSPECIFIED) is None
    assert codec.STATUS_OUT[OrderStatus.UNKNOWN] == gateway_pb2.EXCHANGE_ORDER_STATUS_UNKNOWN
    assert set(codec.STATUS_OUT) == set(OrderStatus)
    assert set(codec.EXEC_OUT) == set(ExecType)


def test_every_anomaly_kind_has_its_own_proto_value():
    assert set(codec.ANOMALY_OUT) == set(AnomalyKind)
    assert codec.ANOMALY_OUT[AnomalyKind.REFUSED_TRANSITION] == gateway_pb2.ANOMALY_KIND_REFUSED_TRANSITION
    assert len(set(codec.ANOMALY_OUT.values())) == len(AnomalyKind)
    assert gateway_pb2.ANOMALY_KIND_UNSPECIFIED not in codec.ANOMALY_OUT.values()


def test_wire_decimals_keep_every_digit():
    assert codec.encode_decimal(D("0.001")) == "0.00100000"
    assert codec.encode_decimal(D("6.1725012345")) == "6.1725012345"
    assert codec.encode_decimal(None) == ""
