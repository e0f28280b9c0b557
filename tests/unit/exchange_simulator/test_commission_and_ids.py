"""Commission in BNB ("pay fees with BNB"), the fallback to the asset received, and order/trade ids from the clock."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.exchange_simulator.config import SIM_DEV_ED25519_API_KEY, SIM_DEV_ED25519_PUBLIC_KEY_FILE, SimConfig
from services.exchange_simulator.matching import AccountPosition, Exchange, ExecutionReport, NewOrder
from shared.config import SIM_DEV_API_KEY, SIM_DEV_API_SECRET, ConfigError

D = Decimal
NOW = 1_700_000_000_000


def exchange(clock_ms: int = NOW, **balances: str) -> Exchange:
    amounts = balances or {"USDT": "1000000", "BTC": "100", "BNB": "1000"}
    return Exchange(balances={asset: D(amount) for asset, amount in amounts.items()}, clock=lambda: clock_ms)


def market(symbol: str, side: str, quantity: str) -> NewOrder:
    return NewOrder(symbol=symbol, side=side, type="MARKET", quantity=D(quantity))


def balance(ex: Exchange, asset: str) -> tuple[Decimal, Decimal]:
    b = ex.account.get(asset)
    return b.free, b.locked


def trade_reports(events: list[object]) -> list[ExecutionReport]:
    return [e for e in events if isinstance(e, ExecutionReport) and e.execution_type == "TRADE"]


# ------------------------------------------------------------------------------------------ commission in BNB


def test_bnb_commission_on_a_buy_is_the_quote_value_times_the_rate_at_the_bnb_price() -> None:
    ex = exchange()
    ex.set_commission("BNB")
    placed, events = ex.place(market("BTCUSDT", "BUY", "0.1"))

    # 0.1 BTC at 50000 = 5000 USDT; 0.1 % = 5 USDT; at BNB 600.00: 0.008333333... -> 0.00833333 BNB.
    [trade] = placed.trades
    assert (trade.commission, trade.commission_asset) == (D("0.00833333"), "BNB")
    [report] = trade_reports(events)
    assert (report.commission, report.commission_asset) == (D("0.00833333"), "BNB")
    assert balance(ex, "BTC") == (D("100.1"), 0)  # the asset received arrives whole
    assert balance(ex, "USDT") == (D("995000"), 0)
    assert balance(ex, "BNB") == (D("999.99166667"), 0)
    [position] = [e for e in events if isinstance(e, AccountPosition)]
    assert ("BNB", D("999.99166667"), D(0)) in position.balances


def test_bnb_commission_on_a_sell_leaves_the_quote_received_whole() -> None:
    ex = exchange()
    ex.set_commission("BNB", D("0.00075"))
    placed, _ = ex.place(market("BTCUSDT", "SELL", "2"))

    # 2 BTC at 50000 = 100000 USDT; 0.075 % = 75 USDT = 0.125 BNB at 600.
    assert [(t.commission, t.commission_asset) for t in placed.trades] == [(D("0.125"), "BNB")]
    assert balance(ex, "USDT") == (D("1100000"), 0)
    assert balance(ex, "BTC") == (D("98"), 0)
    assert balance(ex, "BNB") == (D("999.875"), 0)


def test_bnb_commission_is_rounded_half_up_to_8_decimals() -> None:
    ex = exchange()
    ex.set_commission("BNB")
    ex.set_price("BNBUSDT", D("400.00"))
    ex.set_price("BTCUSDT", D("50000.02"))
    placed, _ = ex.place(market("BTCUSDT", "BUY", "0.1"))

    # 5000.002 USDT x 0.001 / 400 = 0.012500005 BNB exactly: half-up gives ...01, half-even would give ...00.
    assert placed.trades[0].commission == D("0.01250001")


def test_too_little_free_bnb_pays_the_commission_in_the_asset_received() -> None:
    ex = exchange(USDT="100000", BTC="10", BNB="0.008")
    ex.set_commission("BNB")
    placed, _ = ex.place(market("BTCUSDT", "BUY", "0.1"))

    # 0.00833333 BNB is due and 0.008 is free: Binance charges the standard way instead.
    assert [(t.commission, t.commission_asset) for t in placed.trades] == [(D("0.0001"), "BTC")]
    assert balance(ex, "BNB") == (D("0.008"), 0)
    assert balance(ex, "BTC") == (D("10.0999"), 0)


def test_selling_all_free_bnb_pays_that_sells_commission_in_the_quote_asset() -> None:
    ex = exchange(USDT="0", BNB="10")
    ex.set_commission("BNB")
    placed, _ = ex.place(market("BNBUSDT", "SELL", "10"))

    # The 10 BNB sold are locked by the order, so no free BNB is left for the fee: 0.1 % of 6000 USDT.
    assert [(t.commission, t.commission_asset) for t in placed.trades] == [(D("6"), "USDT")]
    assert balance(ex, "USDT") == (D("5994"), 0)
    assert balance(ex, "BNB") == (D(0), 0)


def test_buying_bnb_with_bnb_fees_pays_from_the_bnb_just_received() -> None:
    ex = exchange(USDT="6000", BNB="0")
    ex.set_commission("BNB")
    placed, _ = ex.place(market("BNBUSDT", "BUY", "1"))

    # 600 USDT x 0.001 = 0.6 USDT = 0.001 BNB at 600, charged in BNB after the bought BNB arrived.
    assert [(t.commission, t.commission_asset) for t in placed.trades] == [(D("0.001"), "BNB")]
    assert balance(ex, "BNB") == (D("0.999"), 0)


def test_resting_order_filled_as_maker_pays_bnb_and_its_lock_is_released() -> None:
    ex = exchange()
    ex.set_commission("BNB")
    ex.place(
        NewOrder(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity=D("1"), price=D("49000.00"), time_in_force="GTC")
    )
    assert balance(ex, "USDT") == (D("951000"), D("49000"))

    events = ex.set_price("BTCUSDT", D("48999.00"))

    # A maker fills at its own price: 49000 USDT x 0.001 = 49 USDT = 0.08166667 BNB at 600.
    [report] = trade_reports(events)
    assert (report.commission, report.commission_asset, report.is_maker) == (D("0.08166667"), "BNB", True)
    assert balance(ex, "USDT") == (D("951000"), 0)
    assert balance(ex, "BTC") == (D("101"), 0)
    assert balance(ex, "BNB") == (D("999.91833333"), 0)


def test_commission_in_the_asset_received_again_after_bnb_is_turned_off() -> None:
    ex = exchange()
    ex.set_commission("BNB", D("0.002"))
    ex.set_commission("")
    placed, _ = ex.place(market("BTCUSDT", "BUY", "1"))
    assert [(t.commission, t.commission_asset) for t in placed.trades] == [(D("0.002"), "BTC")]
    assert (ex.commission_asset, ex.commission_rate) == ("", D("0.002"))


@pytest.mark.parametrize(("asset", "rate"), [("ETH", None), ("bnb", None), ("BNB", D("-0.001")), ("BNB", D(1))])
def test_set_commission_refuses_an_unknown_asset_or_a_rate_outside_0_to_1(asset: str, rate: Decimal | None) -> None:
    ex = exchange()
    with pytest.raises(ValueError):
        ex.set_commission(asset, rate)
    assert (ex.commission_asset, ex.commission_rate) == ("", D("0.001"))


def test_config_reads_sim_commission_asset_and_rate() -> None:
    config = SimConfig.from_env({"SIM_COMMISSION_ASSET": "bnb", "SIM_COMMISSION_RATE": "0.00075"})
    assert (config.commission_asset, config.commission_rate) == ("BNB", D("0.00075"))
    assert (SimConfig.from_env({}).commission_asset, SimConfig.from_env({}).commission_rate) == ("", D("0.001"))


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"SIM_COMMISSION_ASSET": "ETH"}, "SIM_COMMISSION_ASSET"),
        ({"SIM_COMMISSION_RATE": "abc"}, "SIM_COMMISSION_RATE"),
        ({"SIM_COMMISSION_RATE": "1"}, "SIM_COMMISSION_RATE"),
    ],
)
def test_config_refuses_a_bad_commission_setting_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        SimConfig.from_env(env)


def test_with_the_gateways_key_file_in_the_environment_binance_api_key_names_the_public_key() -> None:
    shared_env = {"BINANCE_API_KEY": "myEd25519Key", "BINANCE_PRIVATE_KEY_FILE": "/keys/ed25519.pem"}
    config = SimConfig.from_env(shared_env)
    assert (config.api_key, config.api_secret) == (SIM_DEV_API_KEY, SIM_DEV_API_SECRET)
    assert (config.public_key_api_key, config.public_key_file) == ("myEd25519Key", SIM_DEV_ED25519_PUBLIC_KEY_FILE)
    hmac_only = SimConfig.from_env({"BINANCE_API_KEY": "myHmacKey", "BINANCE_API_SECRET": "myHmacSecret"})
    assert (hmac_only.api_key, hmac_only.public_key_api_key) == ("myHmacKey", SIM_DEV_ED25519_API_KEY)


# ------------------------------------------------------------------------------------------ ids


def test_order_and_trade_ids_start_from_the_clock_in_ms_times_1000() -> None:
    ex = exchange()
    placed, _ = ex.place(market("BTCUSDT", "BUY", "1"))
    assert placed.order_id == NOW * 1000
    assert [t.id for t in placed.trades] == [NOW * 1000]


def test_a_restarted_exchange_never_reuses_an_order_or_trade_id() -> None:
    before = exchange(clock_ms=NOW)
    seen_orders, seen_trades = set(), set()
    for _ in range(50):
        placed, _ = before.place(market("BTCUSDT", "BUY", "0.01"))
        seen_orders.add(placed.order_id)
        seen_trades.update(t.id for t in placed.trades)

    after = exchange(clock_ms=NOW + 1)  # a restart one millisecond later
    placed, _ = after.place(market("BTCUSDT", "BUY", "0.01"))

    assert placed.order_id > max(seen_orders)
    assert min(t.id for t in placed.trades) > max(seen_trades)


def test_reset_goes_on_from_the_last_ids_when_the_clock_has_not_moved() -> None:
    ex = exchange()
    first, _ = ex.place(market("BTCUSDT", "BUY", "0.01"))
    ex.reset({"USDT": D(1000000)})
    second, _ = ex.place(market("BTCUSDT", "BUY", "0.01"))
    assert second.order_id == first.order_id + 1
    assert second.trades[0].id == first.trades[0].id + 1


def test_reset_with_next_ids_reproduces_a_forgetful_exchange() -> None:
    ex = exchange()
    ex.place(market("BTCUSDT", "BUY", "0.01"))
    ex.reset({"USDT": D(1000000)}, next_order_id=1, next_trade_id=7)
    btc, _ = ex.place(market("BTCUSDT", "BUY", "0.01"))
    eth, _ = ex.place(market("ETHUSDT", "BUY", "0.01"))
    assert (btc.order_id, btc.trades[0].id) == (1, 7)
    assert (eth.order_id, eth.trades[0].id) == (1, 7)
