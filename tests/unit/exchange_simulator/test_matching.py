"""The matching engine, with no I/O: fills, prices, commissions, balances, stops, rejections."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from services.exchange_simulator.errors import BinanceError
from services.exchange_simulator.matching import (
    AccountPosition,
    Event,
    Exchange,
    ExecutionReport,
    NewOrder,
    Order,
)
from services.exchange_simulator.symbols import DEFAULT_SYMBOLS

D = Decimal
NOW = 1_700_000_000_000
USDT0 = D(10_000_000)
BTC0 = D(1000)


@pytest.fixture
def ex() -> Exchange:
    return Exchange(balances={"USDT": USDT0, "BTC": BTC0, "ETH": D(10000), "BNB": D(100000)}, clock=lambda: NOW)


def order(symbol: str = "BTCUSDT", side: str = "BUY", type: str = "LIMIT", **kw: object) -> NewOrder:
    fields: dict[str, object] = {"symbol": symbol, "side": side, "type": type}
    for key, value in kw.items():
        fields[key] = D(value) if key in ("quantity", "price", "stop_price", "quote_order_qty") else value
    if type in ("LIMIT", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT") and "time_in_force" not in fields:
        fields["time_in_force"] = "GTC"
    return NewOrder(**fields)  # type: ignore[arg-type]


def reports(events: list[Event]) -> list[ExecutionReport]:
    return [e for e in events if isinstance(e, ExecutionReport)]


def kinds(events: list[Event]) -> list[str]:
    return [e.execution_type for e in reports(events)]


def trades(events: list[Event]) -> list[tuple[Decimal, Decimal]]:
    return [(e.last_price, e.last_qty) for e in reports(events) if e.execution_type == "TRADE"]


def bal(ex: Exchange, asset: str) -> tuple[Decimal, Decimal]:
    b = ex.account.get(asset)
    return b.free, b.locked


def rejection(ex: Exchange, request: NewOrder) -> tuple[int, str]:
    with pytest.raises(BinanceError) as info:
        ex.place(request)
    return info.value.code, info.value.msg


# ------------------------------------------------------------------------------------------ MARKET


def test_market_buy_larger_than_a_level_fills_in_several_trades_at_worse_prices(ex: Exchange) -> None:
    placed, events = ex.place(order(type="MARKET", quantity="12"))

    # Levels of 5 BTC, 5.00 USDT apart (0.01 % of 50000), starting at the last price.
    assert trades(events) == [(D("50000"), D(5)), (D("50005"), D(5)), (D("50010"), D(2))]
    assert kinds(events) == ["NEW", "TRADE", "TRADE", "TRADE"]
    assert placed.status == "FILLED"
    assert placed.executed_qty == D(12)
    assert placed.cum_quote == D("600045")
    assert [t.commission for t in placed.trades] == [D("0.005"), D("0.005"), D("0.002")]
    assert all(t.commission_asset == "BTC" and not t.is_maker for t in placed.trades)
    assert bal(ex, "USDT") == (USDT0 - D("600045"), 0)
    assert bal(ex, "BTC") == (BTC0 + D(12) - D("0.012"), 0)


def test_market_order_beyond_the_book_expires_the_rest(ex: Exchange) -> None:
    ex.set_liquidity("BTCUSDT", level_quantity=D(5), levels=2)
    placed, events = ex.place(order(side="SELL", type="MARKET", quantity="12"))

    assert kinds(events) == ["NEW", "TRADE", "TRADE", "EXPIRED"]
    assert trades(events) == [(D("50000"), D(5)), (D("49995"), D(5))]
    assert placed.status == "EXPIRED" and placed.expiry_reason == "INSUFFICIENT_LIQUIDITY"
    assert reports(events)[-1].expiry_reason == "INSUFFICIENT_LIQUIDITY"
    # The unfilled 2 BTC are unlocked again; the seller received quote minus 0.1 %.
    quote = D(5) * D(50000) + D(5) * D(49995)
    assert bal(ex, "BTC") == (BTC0 - D(10), 0)
    assert bal(ex, "USDT") == (USDT0 + quote - quote * D("0.001"), 0)


def test_market_buy_by_quote_order_qty_spends_at_most_that_much(ex: Exchange) -> None:
    placed, _ = ex.place(order(type="MARKET", quote_order_qty="1000"))

    assert placed.status == "FILLED"
    assert placed.executed_qty == D("0.02")
    assert placed.cum_quote == D("1000")
    assert placed.quote_order_qty == D("1000")


# ------------------------------------------------------------------------------------------ LIMIT


def test_resting_limit_fills_at_its_own_price_as_maker_when_the_market_crosses(ex: Exchange) -> None:
    placed, events = ex.place(order(quantity="0.1", price="49000"))
    assert kinds(events) == ["NEW"]
    assert reports(events)[0].is_working
    assert bal(ex, "USDT") == (USDT0 - D(4900), D(4900))

    assert ex.set_price("BTCUSDT", D("49000.01")) == []
    events = ex.set_price("BTCUSDT", D("48500"))

    assert trades(events) == [(D("49000"), D("0.1"))]
    report = reports(events)[0]
    assert report.is_maker and report.status == "FILLED"
    assert placed.status == "FILLED"
    assert bal(ex, "USDT") == (USDT0 - D(4900), 0)
    assert bal(ex, "BTC") == (BTC0 + D("0.1") - D("0.0001"), 0)
    assert any(isinstance(e, AccountPosition) for e in events)


def test_marketable_limit_takes_at_the_market_price_and_releases_the_difference(ex: Exchange) -> None:
    placed, events = ex.place(order(quantity="1", price="51000"))

    assert trades(events) == [(D(50000), D(1))]
    assert not reports(events)[1].is_maker
    assert placed.status == "FILLED"
    assert bal(ex, "USDT") == (USDT0 - D(50000), 0)


def test_marketable_limit_bigger_than_the_book_within_its_price_rests_the_rest(ex: Exchange) -> None:
    placed, events = ex.place(order(quantity="12", price="50006"))

    assert trades(events) == [(D(50000), D(5)), (D(50005), D(5))]
    assert placed.status == "PARTIALLY_FILLED"
    assert placed.book is not None
    # 2 BTC still reserved at the limit price; the better prices of the fills were given back at once.
    assert bal(ex, "USDT") == (USDT0 - D(250000) - D(250025) - D(2) * D(50006), D(2) * D(50006))


def test_volume_cap_makes_a_partial_then_a_full_fill_with_exact_cumulative_figures(ex: Exchange) -> None:
    placed, _ = ex.place(order(side="SELL", quantity="1", price="51000"))
    assert bal(ex, "BTC") == (BTC0 - 1, D(1))

    first = reports(ex.set_price("BTCUSDT", D(51000), volume=D("0.4")))
    assert [(r.execution_type, r.status) for r in first] == [("TRADE", "PARTIALLY_FILLED")]
    assert (first[0].last_qty, first[0].cum_qty, first[0].last_quote, first[0].cum_quote) == (
        D("0.4"),
        D("0.4"),
        D(20400),
        D(20400),
    )
    assert first[0].commission == D("20.4") and first[0].commission_asset == "USDT"
    assert bal(ex, "BTC") == (BTC0 - 1, D("0.6"))

    second = reports(ex.set_price("BTCUSDT", D("51000.5"), volume=D(5)))
    assert [(r.execution_type, r.status) for r in second] == [("TRADE", "FILLED")]
    assert (second[0].last_qty, second[0].cum_qty, second[0].last_price, second[0].last_quote) == (
        D("0.6"),
        D(1),
        D(51000),
        D(30600),
    )
    assert second[0].cum_quote == D(51000)
    assert placed.status == "FILLED"
    assert bal(ex, "BTC") == (BTC0 - 1, 0)
    assert bal(ex, "USDT") == (USDT0 + D(51000) - D(51), 0)


def test_ioc_fills_what_it_can_at_once_and_expires_the_rest(ex: Exchange) -> None:
    placed, events = ex.place(order(quantity="12", price="50006", time_in_force="IOC"))

    assert kinds(events) == ["NEW", "TRADE", "TRADE", "EXPIRED"]
    assert placed.status == "EXPIRED" and placed.executed_qty == D(10)
    assert placed.expiry_reason == "UNFILLED_IOC_QUANTITY_EXPIRED"
    assert bal(ex, "USDT")[1] == 0


def test_ioc_that_cannot_trade_expires_without_fills(ex: Exchange) -> None:
    placed, events = ex.place(order(quantity="1", price="49000", time_in_force="IOC"))

    assert kinds(events) == ["NEW", "EXPIRED"]
    assert placed.executed_qty == 0
    assert bal(ex, "USDT") == (USDT0, 0)


def test_fok_fills_all_at_once_or_expires_with_no_fill(ex: Exchange) -> None:
    killed, events = ex.place(order(quantity="12", price="50006", time_in_force="FOK"))
    assert kinds(events) == ["NEW", "EXPIRED"]
    assert killed.executed_qty == 0 and killed.expiry_reason == "UNFILLED_FOK_ORDER_EXPIRED"
    assert bal(ex, "USDT") == (USDT0, 0)

    filled, events = ex.place(order(quantity="10", price="50006", time_in_force="FOK"))
    assert kinds(events) == ["NEW", "TRADE", "TRADE"]
    assert filled.status == "FILLED"


def test_limit_maker_that_would_match_is_rejected_and_one_that_would_not_rests(ex: Exchange) -> None:
    assert rejection(ex, order(type="LIMIT_MAKER", quantity="1", price="50000")) == (
        -2010,
        "Order would immediately match and take.",
    )
    assert rejection(ex, order(side="SELL", type="LIMIT_MAKER", quantity="1", price="49999")) == (
        -2010,
        "Order would immediately match and take.",
    )
    placed, events = ex.place(order(type="LIMIT_MAKER", quantity="1", price="49999.99"))
    assert kinds(events) == ["NEW"] and placed.status == "NEW" and placed.book is not None


# ------------------------------------------------------------------------------------------ stops


@pytest.mark.parametrize(
    "case",
    [
        # (type, side, stop price, a price that must not trigger it, the triggering price = fill price)
        ("STOP_LOSS", "SELL", "49000", "49000.01", "49000"),
        ("STOP_LOSS", "BUY", "51000", "50999.99", "51000"),
        ("TAKE_PROFIT", "SELL", "52000", "51999.99", "52500"),
        ("TAKE_PROFIT", "BUY", "48000", "48000.01", "47000"),
    ],
)
def test_stop_market_orders_trigger_in_their_direction_and_trade_at_the_market(
    ex: Exchange, case: tuple[str, str, str, str, str]
) -> None:
    type_, side, stop, quiet, trigger = case
    placed, events = ex.place(order(side=side, type=type_, quantity="0.5", stop_price=stop))
    assert kinds(events) == ["NEW"]
    assert not placed.is_working and placed.working_time == -1

    assert ex.set_price("BTCUSDT", D(quiet)) == []
    events = ex.set_price("BTCUSDT", D(trigger))

    assert trades(events) == [(D(trigger), D("0.5"))]
    assert placed.status == "FILLED" and placed.is_working and placed.working_time == NOW
    assert not placed.trades[0].is_maker
    assert bal(ex, "USDT")[1] == 0 and bal(ex, "BTC")[1] == 0


def test_stop_limit_triggers_then_works_as_a_limit_order(ex: Exchange) -> None:
    # BUY stop-limit: triggers at 51000, its limit 50990 is below the market then, so it rests.
    placed, _ = ex.place(order(type="STOP_LOSS_LIMIT", quantity="0.5", price="50990", stop_price="51000"))
    assert ex.set_price("BTCUSDT", D(51000)) == []
    assert placed.is_working and placed.book is not None and placed.status == "NEW"

    events = ex.set_price("BTCUSDT", D(50980))
    assert trades(events) == [(D(50990), D("0.5"))]
    assert reports(events)[0].is_maker

    # SELL take-profit-limit: triggers at 52000 with its limit 51900 marketable, so it takes at the market.
    tp, _ = ex.place(order(side="SELL", type="TAKE_PROFIT_LIMIT", quantity="0.5", price="51900", stop_price="52000"))
    events = ex.set_price("BTCUSDT", D(52000))
    assert trades(events) == [(D(52000), D("0.5"))]
    assert tp.status == "FILLED"


def test_stop_that_would_trigger_immediately_is_rejected(ex: Exchange) -> None:
    expected = (-2010, "Order would trigger immediately.")
    assert rejection(ex, order(side="SELL", type="STOP_LOSS", quantity="1", stop_price="50000")) == expected
    assert rejection(ex, order(side="BUY", type="STOP_LOSS", quantity="1", stop_price="49999")) == expected
    assert rejection(ex, order(side="SELL", type="TAKE_PROFIT", quantity="1", stop_price="49000")) == expected
    assert rejection(ex, order(side="BUY", type="TAKE_PROFIT", quantity="1", stop_price="50000")) == expected


# ------------------------------------------------------------------------------------------ commission and balances


def test_commission_is_rounded_half_up_to_8_decimals(ex: Exchange) -> None:
    # 0.0001 BTC x 50000.05 = 5.000005 USDT; 0.1 % is 0.005000005 -> 0.00500001 (half-even would give ...00).
    ex.place(order(side="SELL", quantity="0.0001", price="50000.05"))
    events = ex.set_price("BTCUSDT", D("50000.05"))
    report = reports(events)[0]
    assert report.commission == D("0.00500001")
    assert report.last_quote == D("5.000005")
    assert bal(ex, "USDT") == (USDT0 + D("5.000005") - D("0.00500001"), 0)


def test_balances_stay_exact_through_place_partial_fill_and_cancel(ex: Exchange) -> None:
    placed, _ = ex.place(order(quantity="2", price="49000.5"))
    assert bal(ex, "USDT") == (USDT0 - D(98001), D(98001))

    ex.set_price("BTCUSDT", D(49000), volume=D("0.75"))
    assert bal(ex, "USDT") == (USDT0 - D(98001), D(98001) - D("36750.375"))
    assert bal(ex, "BTC") == (BTC0 + D("0.75") - D("0.00075"), 0)

    cancelled, cancel_id, events = ex.cancel("BTCUSDT", order_id=placed.order_id)
    assert cancelled.status == "CANCELED"
    assert bal(ex, "USDT") == (USDT0 - D("36750.375"), 0)
    report = reports(events)[0]
    assert (report.execution_type, report.client_order_id, report.orig_client_order_id) == (
        "CANCELED",
        cancel_id,
        placed.client_order_id,
    )
    assert report.cum_qty == D("0.75")


def test_insufficient_balance_is_rejected() -> None:
    ex = Exchange(balances={"USDT": D(1000), "BTC": D("0.01")}, clock=lambda: NOW)
    expected = (-2010, "Account has insufficient balance for requested action.")
    assert rejection(ex, order(quantity="0.021", price="48000")) == expected  # 1008 USDT > 1000
    assert rejection(ex, order(type="MARKET", quantity="0.021")) == expected  # 1050 USDT for the walk
    assert rejection(ex, order(side="SELL", quantity="0.011", price="50000")) == expected
    assert rejection(ex, order(side="SELL", type="MARKET", quantity="0.011")) == expected
    assert bal(ex, "USDT") == (D(1000), 0)
    assert bal(ex, "BTC") == (D("0.01"), 0)
    ex.place(order(quantity="0.02", price="50000"))  # exactly 1000
    assert bal(ex, "USDT") == (0, 0)


def test_duplicate_client_order_id_of_an_open_order_is_rejected_until_it_closes(ex: Exchange) -> None:
    ex.place(order(quantity="1", price="40000", client_order_id="my-id_1"))
    assert rejection(ex, order(quantity="1", price="40000", client_order_id="my-id_1")) == (
        -2010,
        "Duplicate order sent.",
    )
    ex.cancel("BTCUSDT", orig_client_order_id="my-id_1")
    again, _ = ex.place(order(quantity="1", price="40000", client_order_id="my-id_1"))
    assert ex.find_order("BTCUSDT", client_order_id="my-id_1") is again


def test_cancel_of_an_order_that_is_not_open_is_unknown(ex: Exchange) -> None:
    filled, _ = ex.place(order(type="MARKET", quantity="1"))
    with pytest.raises(BinanceError) as info:
        ex.cancel("BTCUSDT", order_id=filled.order_id)
    assert (info.value.code, info.value.msg) == (-2011, "Unknown order sent.")
    with pytest.raises(BinanceError) as info:
        ex.cancel("BTCUSDT", order_id=999)
    assert info.value.code == -2011


# ------------------------------------------------------------------------------------------ filters


@pytest.mark.parametrize(
    ("request_", "failed"),
    [
        (order(quantity="1", price="50000.001"), "PRICE_FILTER"),
        (order(quantity="1", price="0.001"), "PRICE_FILTER"),
        (order(type="STOP_LOSS_LIMIT", quantity="1", price="50000", stop_price="51000.005"), "PRICE_FILTER"),
        (order(quantity="0.000015", price="50000"), "LOT_SIZE"),
        (order(quantity="9001", price="50000"), "LOT_SIZE"),
        (order(type="MARKET", quantity="150"), "MARKET_LOT_SIZE"),
        (order(quantity="0.0001", price="40000"), "NOTIONAL"),
        (order(type="MARKET", quantity="0.00001"), "NOTIONAL"),
        (order(quantity="1", price="250001"), "PERCENT_PRICE_BY_SIDE"),
        (order(side="SELL", quantity="1", price="9999.99"), "PERCENT_PRICE_BY_SIDE"),
    ],
)
def test_each_filter_failure_has_binance_message(ex: Exchange, request_: NewOrder, failed: str) -> None:
    assert rejection(ex, request_) == (-1013, f"Filter failure: {failed}")


def test_max_num_orders_and_max_num_algo_orders() -> None:
    specs = [dataclasses.replace(DEFAULT_SYMBOLS[0], max_num_orders=3, max_num_algo_orders=2)]
    ex = Exchange(specs, balances={"USDT": USDT0, "BTC": BTC0}, clock=lambda: NOW)
    ex.place(order(side="SELL", type="STOP_LOSS", quantity="1", stop_price="40000"))
    ex.place(order(side="SELL", type="STOP_LOSS", quantity="1", stop_price="40001"))
    assert rejection(ex, order(side="SELL", type="STOP_LOSS", quantity="1", stop_price="40002")) == (
        -1013,
        "Filter failure: MAX_NUM_ALGO_ORDERS",
    )
    ex.place(order(quantity="1", price="40000"))
    assert rejection(ex, order(quantity="1", price="40000")) == (-1013, "Filter failure: MAX_NUM_ORDERS")


# ------------------------------------------------------------------------------------------ hooks


def test_first_fill_is_reported_once_per_order(ex: Exchange) -> None:
    accepted: list[int] = []
    first_fills: list[int] = []
    ex.on_accept = lambda o, now: accepted.append(o.order_id)
    ex.on_first_fill = lambda o, now: first_fills.append(o.order_id)

    resting, _ = ex.place(order(quantity="1", price="49000"))
    market: Order
    market, _ = ex.place(order(type="MARKET", quantity="12"))  # three trades, one first fill
    ex.set_price("BTCUSDT", D(49000), volume=D("0.3"))
    ex.set_price("BTCUSDT", D(49000))

    assert accepted == [resting.order_id, market.order_id]
    assert first_fills == [market.order_id, resting.order_id]


def test_trade_ids_start_from_the_clock_and_increase_per_symbol(ex: Exchange) -> None:
    a, _ = ex.place(order(type="MARKET", quantity="12"))
    b, _ = ex.place(order(symbol="ETHUSDT", type="MARKET", quantity="1"))
    c, _ = ex.place(order(type="MARKET", quantity="1"))
    first = NOW * 1000
    assert [t.id for t in a.trades] == [first, first + 1, first + 2]
    assert [t.id for t in b.trades] == [first]
    assert [t.id for t in c.trades] == [first + 3]


def test_memory_is_bounded_long_final_orders_are_forgotten_and_open_ones_kept(
    ex: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.exchange_simulator import matching

    monkeypatch.setattr(matching, "ORDER_HISTORY", 5)
    resting, _ = ex.place(order(quantity="0.001", price="40000", client_order_id="stays-open"))
    placed = []
    for i in range(12):
        o, _ = ex.place(order(quantity="0.001", price="40000", client_order_id=f"c{i}"))
        ex.cancel("BTCUSDT", order_id=o.order_id)
        placed.append(o)
    market = ex.market("BTCUSDT")
    assert len(market.closed) == 5
    assert len(market.orders) == 6  # the five newest final orders and the open one
    assert ex.find_order("BTCUSDT", order_id=placed[0].order_id) is None
    assert ex.find_order("BTCUSDT", client_order_id="c0") is None
    assert ex.find_order("BTCUSDT", order_id=placed[-1].order_id) is placed[-1]
    assert ex.find_order("BTCUSDT", client_order_id="stays-open") is resting
