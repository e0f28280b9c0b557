"""bench.floor's driver against an in-process fake order stand-in (real gRPC on loopback): the
accounting of answers, latency from the due time, the in-flight cap, events and missing events."""

import asyncio
import time

import grpc

from bench import floor


class FakeOrder:
    """Place answers after ``delay`` seconds; Watch gets each event unless the placement number is in ``drop``."""

    def __init__(self, delay: float = 0.0, drop: frozenset[int] = frozenset()) -> None:
        self.delay = delay
        self.drop = drop
        self.watchers = floor._Fanout()
        self.placed = 0

    async def place(self, request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.sleep(self.delay)
        self.placed += 1
        if int.from_bytes(request[: floor.ID_BYTES], "big") not in self.drop:
            self.watchers.publish(request[: floor.ID_BYTES] + floor.EVENT_PAD)
        return request[: floor.ID_BYTES]


async def _driver(fake: FakeOrder, max_in_flight: int = 100) -> tuple[floor.Driver, grpc.aio.Server]:
    server = grpc.aio.server()
    handlers = {
        "Place": grpc.unary_unary_rpc_method_handler(fake.place),
        "Watch": grpc.unary_stream_rpc_method_handler(fake.watchers.stream),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("floor.Order", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    driver = floor.Driver(f"127.0.0.1:{port}", channels=2, max_in_flight=max_in_flight)
    await driver.open()
    return driver, server


async def _close(driver: floor.Driver, server: grpc.aio.Server) -> None:
    await driver.close()
    await server.stop(0)


async def test_every_answer_and_event_is_counted_and_latency_includes_the_service_time():
    fake = FakeOrder(delay=0.03)
    driver, server = await _driver(fake)
    try:
        result = await driver.run_phase("fixed", rate=50, duration=0.4)
    finally:
        await _close(driver, server)
    assert result["sent"] == result["ok"] == fake.placed == 20
    assert result["errors"] == 0 and result["capped"] == 0
    assert result["event_latency"]["count"] == 20 and result["events_missing"] == 0
    assert result["p50_ms"] >= 30  # the handler's 30 ms are in every latency
    assert driver.owner == {}


async def test_latency_counts_from_the_due_time_so_a_stalled_sender_shows():
    # The driver's event loop stalls for 200 ms early in the phase: the placements due meanwhile go
    # out late, all at once, and are answered at once.
    fake = FakeOrder()
    driver, server = await _driver(fake)
    asyncio.get_running_loop().call_later(0.01, time.sleep, 0.2)
    try:
        result = await driver.run_phase("fixed", rate=50, duration=0.4)
    finally:
        await _close(driver, server)
    assert result["ok"] == 20
    # From the actual send every latency would be a few milliseconds; from the due time the first
    # placement due in the stall waits most of its 200 ms.
    assert result["max_ms"] >= 150


async def test_the_in_flight_cap_turns_placements_into_errors_instead_of_queueing_them():
    fake = FakeOrder(delay=0.1)
    driver, server = await _driver(fake, max_in_flight=1)
    try:
        result = await driver.run_phase("fixed", rate=50, duration=0.2)
    finally:
        await _close(driver, server)
    assert result["sent"] == 10
    assert result["capped"] > 0
    assert result["errors"] == result["capped"]
    assert result["ok"] == 10 - result["capped"] == fake.placed


async def test_an_event_that_never_comes_is_counted_missing_after_the_wait(monkeypatch):
    monkeypatch.setattr(floor, "EVENT_WAIT_S", 0.3)
    fake = FakeOrder(drop=frozenset({2, 5}))
    driver, server = await _driver(fake)
    try:
        result = await driver.run_phase("fixed", rate=50, duration=0.2)
    finally:
        await _close(driver, server)
    assert result["ok"] == 10
    assert result["event_latency"]["count"] == 8
    assert result["events_missing"] == 2
    assert driver.owner == {}  # forgotten, so a late event cannot land in a later phase
