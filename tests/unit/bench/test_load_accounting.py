"""The load generator's bookkeeping when a response and a WatchOrders event race (two connections)."""

import time
from types import SimpleNamespace

from bench.load import KIND_MARKETABLE, Generator, Phase, Tracked
from bench.workload import FALLBACK_SYMBOLS
from trading.order.v1 import order_pb2


def _generator() -> Generator:
    return Generator(
        {"target": "127.0.0.1:1", "users": [{"user_id": "u1", "api_key": "k"}], "symbols": FALLBACK_SYMBOLS}
    )


def _order(client_id: str, status: int) -> SimpleNamespace:
    return SimpleNamespace(
        client_order_id=client_id, order_id="ord1", status=status, symbol="BTCUSDT", average_price="", reject_reason=""
    )


def _marketable(gen: Generator, phase: Phase) -> Tracked:
    tracked = Tracked(
        client_id="b1", kind=KIND_MARKETABLE, phase=phase, due=time.perf_counter(), user=0, symbol="BTCUSDT"
    )
    gen.tracked[tracked.client_id] = tracked
    return tracked


def test_a_fill_read_on_the_stream_after_a_final_response_is_still_timed() -> None:
    gen, phase = _generator(), Phase(name="fixed", rate=1, duration=1)
    tracked = _marketable(gen, phase)

    assert gen._accepted(phase, tracked, _order("b1", order_pb2.ORDER_STATUS_FILLED)) == "OK"
    gen._on_update(_order("b1", order_pb2.ORDER_STATUS_FILLED), time.perf_counter())

    assert len(phase.fill_latency) == 1
    assert phase.marketable_accepted == 1 and phase.marketable_unfilled == 0
    assert "b1" not in gen.tracked  # ended by the stream's event


def test_a_fill_read_on_the_stream_first_is_timed_once() -> None:
    gen, phase = _generator(), Phase(name="fixed", rate=1, duration=1)
    tracked = _marketable(gen, phase)

    gen._on_update(_order("b1", order_pb2.ORDER_STATUS_FILLED), time.perf_counter())
    assert gen._accepted(phase, tracked, _order("b1", order_pb2.ORDER_STATUS_FILLED)) == "OK"

    assert len(phase.fill_latency) == 1
    assert "b1" not in gen.tracked


def test_a_marketable_order_that_expired_is_counted_unfilled_when_the_stream_says_so() -> None:
    gen, phase = _generator(), Phase(name="fixed", rate=1, duration=1)
    tracked = _marketable(gen, phase)

    gen._accepted(phase, tracked, _order("b1", order_pb2.ORDER_STATUS_EXPIRED))
    gen._on_update(_order("b1", order_pb2.ORDER_STATUS_EXPIRED), time.perf_counter())

    assert phase.fill_latency == [] and phase.marketable_unfilled == 1
