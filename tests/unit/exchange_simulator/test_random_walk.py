"""The random walk: small steps in whole ticks, reproducible with a seed, and it drives matching."""

from __future__ import annotations

from decimal import Decimal

from services.exchange_simulator.config import SimConfig
from services.exchange_simulator.matching import NewOrder
from services.exchange_simulator.simulator import Simulator


def prices(sim: Simulator) -> dict[str, Decimal]:
    return {name: market.last_price for name, market in sim.exchange.markets.items()}


def test_steps_are_small_whole_ticks_and_reproducible_with_a_seed() -> None:
    a = Simulator(SimConfig(random_walk_seed=42))
    b = Simulator(SimConfig(random_walk_seed=42))
    history = []
    for _ in range(200):
        before = prices(a)
        a.walk_step()
        b.walk_step()
        after = prices(a)
        assert after == prices(b)
        for name, price in after.items():
            spec = a.exchange.markets[name].spec
            assert price % spec.tick_size == 0
            # At most step_bps (5) of the price, plus the small pull back to the start, plus rounding.
            assert abs(price - before[name]) <= before[name] * Decimal("0.0006") + spec.tick_size
        history.append(after["BTCUSDT"])
    assert len(set(history)) > 50


def test_walk_fills_resting_orders_it_crosses() -> None:
    sim = Simulator(SimConfig(random_walk_seed=3))
    order, _ = sim.exchange.place(
        NewOrder("BTCUSDT", "BUY", "LIMIT", quantity=Decimal("0.01"), price=Decimal("49999.99"), time_in_force="GTC")
    )
    for _ in range(10_000):
        sim.walk_step()
        if order.status == "FILLED":
            break
    assert order.status == "FILLED"
    assert order.trades[0].price == Decimal("49999.99") and order.trades[0].is_maker
