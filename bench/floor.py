"""The design's floor: the hops of one order placement with nothing done in them.

Four processes stand in for the order service, the user service, the gateway and the exchange
and pass opaque bytes along the path a resting LIMIT placement takes through the real stack::

    client --Place--> order --Reserve--> user                       (gRPC unary; the order's commit meanwhile)
                      order --Submit---> gateway --POST--> exchange (gRPC unary, HTTP keep-alive)
    exchange --WebSocket event--> gateway --Stream--> order --Watch--> client (server streams)

No protobuf, no validation, no ledger, no matching, no signing, no logging. With ``--durable``
each process also makes the SQLite commits the real one makes on that path, each a one-row
INSERT in WAL mode with ``synchronous=FULL`` on one writer thread that puts every waiting write
in one transaction (as the services' GroupCommit does). On the request's path: order 1 (the order,
at the same time as the Reserve hop), user 1 (the reservation), gateway 1 (the order before the
POST). After the reply, as the services do with what recovery can rebuild, the gateway and the
order each write the answer deferred: it joins the next transaction or starts one 5 ms later. Per
event: the gateway 1 (which carries the deferred answer), the order 1. As in the real gateway, an
order's event is passed on only once its answer is committed.

Whatever this measures is more than any implementation of that shape can do in Python on this
machine, so it separates the cost of the design from the cost of the code in it.

``python -m bench.floor serve ROLE --port P ...`` runs one stand-in (it prints ``ready PORT``, the port
it bound: ``--port 0``, the default, picks a free one);
``python -m bench.floor drive --target ADDR`` sends placements open loop, ``--warmup`` seconds
(not reported) and ``--duration`` seconds at ``--rate``, then each rate of ``--steps`` for
``--step-s`` seconds until a step does not keep up: less than 90% of the offered rate achieved,
more than 1% errors or a p95 above 1 s. It prints a JSON line when a phase starts and when it
ends (with its figures), then the whole result.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from bench.stats import KeepUp, SaturationCurve, latency_summary
from shared.server import install_uvloop

PLACE = "/floor.Order/Place"
WATCH = "/floor.Order/Watch"
RESERVE = "/floor.User/Reserve"
SUBMIT = "/floor.Gateway/Submit"
STREAM = "/floor.Gateway/Stream"
ID_BYTES = 8
# About the sizes of a serialized PlaceOrderRequest, Binance's order answer and an executionReport.
REQUEST_PAD = b"r" * 88
ANSWER_PAD = b"a" * 300
EVENT_PAD = b"e" * 400
# After a phase's last answer, how long its last events may take to arrive before they count as missing.
EVENT_WAIT_S = 5.0
RECORD_DELAY_S = 0.005  # how long a recoverable write may wait to share a transaction (the services' default)
SERVER_OPTIONS = (("grpc.so_reuseport", 0),)


class Committer:
    """Durable one-row commits on one writer thread; each transaction takes every write waiting."""

    def __init__(self, path: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[asyncio.Future[None] | None] = queue.SimpleQueue()
        self._path = path
        self._deferred: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._run, name="floor-writer", daemon=True)
        self._thread.start()

    async def write(self, defer: float | None = None) -> None:
        """Return once a row is committed and synced.

        ``defer`` (seconds), as the services' GroupCommit: the row waits for the next transaction
        another write starts, or starts one after that long.
        """
        future: asyncio.Future[None] = self._loop.create_future()
        if defer is None:
            self._flush()
            self._queue.put(future)
        else:
            self._deferred.append(future)
            if self._timer is None:
                self._timer = self._loop.call_later(defer, self._flush)
        await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for future in self._deferred:
            self._queue.put(future)
        self._deferred.clear()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, at REAL NOT NULL)")
        while True:
            first = self._queue.get()
            if first is None:
                break
            batch = [first]
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            error: sqlite3.Error | None = None
            try:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO rows (at) VALUES (?)", [(time.time(),)] * len(batch))
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                error = exc
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
            self._loop.call_soon_threadsafe(_resolve_all, batch, error)
        conn.close()


def _resolve_all(batch: list[asyncio.Future[None]], error: Exception | None) -> None:
    for future in batch:
        if future.done():
            continue
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


def _commit_function(db: str | None) -> tuple[Callable[..., Awaitable[None]], Committer | None]:
    if not db:
        return _nothing, None
    committer = Committer(db)
    return committer.write, committer


async def _nothing(defer: float | None = None) -> None:
    return None


def _later(commit: Callable[..., Awaitable[None]], pending: set[asyncio.Future[None]]) -> asyncio.Future[None]:
    """Start a deferred commit nobody waits for (kept referenced in ``pending`` until it is done)."""
    future = asyncio.ensure_future(commit(defer=RECORD_DELAY_S))
    pending.add(future)
    future.add_done_callback(pending.discard)
    return future


async def _serve_until_signal(
    port: int,
    service: str,
    handlers: dict[str, grpc.RpcMethodHandler],
    committer: Committer | None,
    close: Callable[[], Awaitable[None]] = _nothing,
) -> None:
    """Serve ``handlers`` until SIGTERM or SIGINT; then ``close``, stop the server and the committer."""
    server = grpc.aio.server(options=SERVER_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()

    async def cleanup() -> None:
        await server.stop(0.5)  # first: calls in flight still have their upstream connections
        await close()
        if committer is not None:
            committer.close()

    await _until_signal(cleanup, bound)


HELLO = b""  # the first message of every stream: the subscription is in place


class _Fanout:
    """Server-stream subscribers, each with its own queue; each stream starts with HELLO."""

    def __init__(self) -> None:
        self.subscribers: set[asyncio.Queue[bytes]] = set()

    def publish(self, message: bytes) -> None:
        for subscriber in self.subscribers:
            subscriber.put_nowait(message)

    async def stream(self, _request: bytes, _context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        subscriber: asyncio.Queue[bytes] = asyncio.Queue()
        self.subscribers.add(subscriber)
        try:
            yield HELLO
            while True:
                yield await subscriber.get()
        finally:
            self.subscribers.discard(subscriber)


async def _until_signal(cleanup: Callable[[], Awaitable[None]], port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {port}", flush=True)
    await stop.wait()
    await cleanup()


async def serve_exchange(port: int) -> None:
    """POST /order answers at once, then sends one WebSocket event per order to every connection."""
    sockets: set[web.WebSocketResponse] = set()
    sending: set[asyncio.Task[None]] = set()

    def send(event: bytes) -> None:
        for ws in sockets:
            if not ws.closed:
                task = asyncio.create_task(ws.send_bytes(event))
                sending.add(task)
                task.add_done_callback(sending.discard)

    async def order(request: web.Request) -> web.Response:
        body = await request.read()
        asyncio.get_running_loop().call_soon(send, body[:ID_BYTES] + EVENT_PAD)  # queued behind the answer
        return web.Response(body=body[:ID_BYTES] + ANSWER_PAD, content_type="application/json")

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sockets.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            sockets.discard(ws)
        return ws

    app = web.Application()
    app.router.add_post("/order", order)
    app.router.add_get("/ws", stream)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await _until_signal(runner.cleanup, int(runner.addresses[0][1]))


async def serve_user(port: int, db: str | None) -> None:
    """Reserve: one durable commit, then the answer."""
    commit, committer = _commit_function(db)

    async def reserve(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        await commit()
        return request[:ID_BYTES]

    await _serve_until_signal(port, "floor.User", {"Reserve": grpc.unary_unary_rpc_method_handler(reserve)}, committer)


class _Answers:
    """The floor gateway's rule: an order's event goes out only once its answer is committed.

    An event that overtakes the answer waits for it; its own journal write starts a transaction,
    which carries the deferred answer (as in the real gateway).
    """

    def __init__(self, commit: Callable[..., Awaitable[None]], events: _Fanout) -> None:
        self._commit = commit
        self._events = events
        self._slots: dict[bytes, asyncio.Future[None]] = {}
        self._releasing: set[asyncio.Task[None]] = set()

    def _slot(self, key: bytes) -> asyncio.Future[None]:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = asyncio.get_running_loop().create_future()
        return slot

    def answered(self, key: bytes) -> None:
        """The answer of order ``key`` is committed (or will never be): its events may go out."""
        slot = self._slot(key)
        if not slot.done():
            slot.set_result(None)

    def event(self, event: bytes) -> None:
        key = event[:ID_BYTES]
        slot = self._slot(key)
        if slot.done():
            self._slots.pop(key, None)
            self._events.publish(event)
            return
        task = asyncio.create_task(self._release(key, event, slot))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _release(self, key: bytes, event: bytes, slot: asyncio.Future[None]) -> None:
        await self._commit()
        await slot
        self._slots.pop(key, None)
        self._events.publish(event)


async def serve_gateway(port: int, exchange: str, db: str | None) -> None:
    """Submit: commit, POST to the exchange, reply, commit the answer deferred; Stream: the exchange's events."""
    commit, committer = _commit_function(db)
    events = _Fanout()
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64))
    ws = await session.ws_connect(f"http://{exchange}/ws", autoping=True)

    answers = _Answers(commit, events)
    recording: set[asyncio.Future[None]] = set()

    async def pump() -> None:
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY:
                answers.event(message.data)

    async def submit(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        key = request[:ID_BYTES]
        try:
            await commit()
            async with session.post(f"http://{exchange}/order", data=request) as response:
                answer = await response.read()
        except BaseException:
            answers.answered(key)
            raise
        # Answered at once; the answer is journaled with the next transaction (as the real gateway).
        _later(commit, recording).add_done_callback(lambda _f: answers.answered(key))
        return answer

    pumping = asyncio.create_task(pump())

    async def close() -> None:
        pumping.cancel()
        await ws.close()
        await session.close()

    handlers = {
        "Submit": grpc.unary_unary_rpc_method_handler(submit),
        "Stream": grpc.unary_stream_rpc_method_handler(events.stream),
    }
    await _serve_until_signal(port, "floor.Gateway", handlers, committer, close)


async def serve_order(port: int, user: str, gateway: str, db: str | None) -> None:
    """Place: commit and Reserve at once, Submit, reply, commit deferred; every event: commit, then to the watchers."""
    commit, committer = _commit_function(db)
    watchers = _Fanout()
    user_channel = grpc.aio.insecure_channel(user)
    gateway_channel = grpc.aio.insecure_channel(gateway)
    reserve_call = user_channel.unary_unary(RESERVE)
    submit_call = gateway_channel.unary_unary(SUBMIT)
    stream_call = gateway_channel.unary_stream(STREAM)

    applying: set[asyncio.Task[None]] = set()
    recording: set[asyncio.Future[None]] = set()
    subscribed = asyncio.Event()

    async def apply(event: bytes) -> None:
        await commit()
        watchers.publish(event)

    async def consume() -> None:
        # Each event's commit is started at once, so the commits of events that arrive together share
        # a transaction instead of queueing one behind the other.
        async for event in stream_call(b""):
            if event == HELLO:
                subscribed.set()
                continue
            task = asyncio.create_task(apply(event))
            applying.add(task)
            task.add_done_callback(applying.discard)

    async def place(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        await asyncio.gather(commit(), reserve_call(request, timeout=10))  # the INSERT and Reserve at once
        answer: bytes = await submit_call(request, timeout=10)
        _later(commit, recording)  # the answer is recorded after the reply (as the real order service)
        return answer

    consuming = asyncio.create_task(consume())
    await asyncio.wait_for(subscribed.wait(), timeout=10)

    async def close() -> None:
        consuming.cancel()
        await user_channel.close()
        await gateway_channel.close()

    handlers = {
        "Place": grpc.unary_unary_rpc_method_handler(place),
        "Watch": grpc.unary_stream_rpc_method_handler(watchers.stream),
    }
    await _serve_until_signal(port, "floor.Order", handlers, committer, close)


class _Phase:
    """One phase's sends: intended send times, answers and events, by placement number."""

    def __init__(self, name: str, rate: float, duration: float) -> None:
        self.name = name
        self.rate = rate
        self.duration = duration
        self.intended: dict[int, float] = {}
        self.latency: list[float] = []
        self.event_latency: list[float] = []
        self.errors = 0
        self.capped = 0
        self.events_missing = 0
        self.t0 = 0.0
        self.last_done = 0.0

    def summary(self) -> dict[str, Any]:
        span = max(self.last_done - self.t0, self.duration, 1e-9)
        sent = len(self.intended)
        answers = latency_summary(self.latency)
        return {
            "name": self.name,
            "target_rps": self.rate,
            "duration_s": self.duration,
            "sent": sent,
            "ok": len(self.latency),
            "achieved_rps": round(len(self.latency) / span, 2),
            "p50_ms": answers["p50_ms"],
            "p95_ms": answers["p95_ms"],
            "p99_ms": answers["p99_ms"],
            "max_ms": answers["max_ms"],
            "errors": self.errors,
            "error_rate": round(self.errors / sent, 6) if sent else 0.0,
            "capped": self.capped,
            "event_latency": latency_summary(self.event_latency),
            "events_missing": self.events_missing,
        }


class Driver:
    """Open loop: latency counts from each placement's intended send time."""

    def __init__(self, target: str, channels: int, max_in_flight: int) -> None:
        self.channels = [
            grpc.aio.insecure_channel(target, options=(("grpc.use_local_subchannel_pool", 1), ("floor.channel", i)))
            for i in range(channels)
        ]
        self.calls = [channel.unary_unary(PLACE) for channel in self.channels]
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.next_id = 0
        self.owner: dict[int, _Phase] = {}
        self.subscribed = asyncio.Event()

    async def open(self) -> None:
        for channel in self.channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        self.watching = asyncio.create_task(self._watch())
        await asyncio.wait_for(self.subscribed.wait(), timeout=10)

    async def close(self) -> None:
        self.watching.cancel()
        for channel in self.channels:
            await channel.close()

    async def _watch(self) -> None:
        async for event in self.channels[0].unary_stream(WATCH)(b""):
            if event == HELLO:
                self.subscribed.set()
                continue
            number = int.from_bytes(event[:ID_BYTES], "big")
            phase = self.owner.pop(number, None)
            if phase is not None:
                phase.event_latency.append(time.perf_counter() - phase.intended[number])

    async def _send(self, phase: _Phase, number: int, call: Any) -> None:
        try:
            await call(number.to_bytes(ID_BYTES, "big") + REQUEST_PAD, timeout=10)
        except Exception:  # any failure is this placement's error, whatever raised it
            phase.errors += 1
            self.owner.pop(number, None)
        else:
            now = time.perf_counter()
            phase.latency.append(now - phase.intended[number])
            phase.last_done = now
        finally:
            self.in_flight -= 1

    async def _await_events(self, phase: _Phase, timeout: float) -> None:
        """Wait until every answered placement's event has arrived, or ``timeout``; count the rest."""
        deadline = time.perf_counter() + timeout
        while True:
            if self.watching.done():
                raise RuntimeError("the Watch stream ended")
            waiting = [number for number in phase.intended if self.owner.get(number) is phase]
            if not waiting:
                return
            if time.perf_counter() >= deadline:
                phase.events_missing = len(waiting)
                for number in waiting:
                    del self.owner[number]
                return
            await asyncio.sleep(0.05)

    async def run_phase(self, name: str, rate: float, duration: float) -> dict[str, Any]:
        phase = _Phase(name, rate, duration)
        _emit({"event": "start", "phase": name, "rate": rate, "duration": duration})
        tasks: set[asyncio.Task[None]] = set()
        count = int(rate * duration)
        phase.t0 = start = time.perf_counter()
        for index in range(count):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            number = self.next_id
            self.next_id += 1
            phase.intended[number] = due
            if self.in_flight >= self.max_in_flight:
                phase.capped += 1
                phase.errors += 1
                continue
            self.owner[number] = phase
            self.in_flight += 1
            task = asyncio.create_task(self._send(phase, number, self.calls[number % len(self.calls)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
        await self._await_events(phase, EVENT_WAIT_S)
        summary = phase.summary()
        _emit({"event": "end", **summary})
        return summary


def _emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    """The fixed rate, then the saturation steps; the result."""
    driver = Driver(args.target, args.channels, args.max_in_flight)
    await driver.open()
    try:
        if args.warmup > 0:
            await driver.run_phase("warmup", args.rate, args.warmup)
        fixed = await driver.run_phase("fixed", args.rate, args.duration)
        saturation = await _saturate(driver, args)
    finally:
        await driver.close()
    return {"fixed": fixed, "saturation": saturation}


async def _saturate(driver: Driver, args: argparse.Namespace) -> dict[str, Any]:
    """The steps, stopped by the stack's rule (bench.stats.KeepUp): the best step and the best that kept up."""
    steps = SaturationCurve(KeepUp())
    for rate in args.steps:
        await asyncio.sleep(args.pause)
        if not steps.add(await driver.run_phase(f"sat-{rate}", float(rate), args.step_s)):
            break
    return steps.result()


def main(argv: list[str] | None = None) -> int:
    """Run one stand-in or the driver."""
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("role", choices=("exchange", "user", "gateway", "order"))
    serve_parser.add_argument("--port", type=int, default=0)
    serve_parser.add_argument("--db", help="SQLite file for the durable commits (none: no commits)")
    serve_parser.add_argument("--exchange", help="host:port of the exchange stand-in (gateway)")
    serve_parser.add_argument("--user", help="host:port of the user stand-in (order)")
    serve_parser.add_argument("--gateway", help="host:port of the gateway stand-in (order)")
    drive_parser = sub.add_parser("drive")
    drive_parser.add_argument("--target", required=True)
    drive_parser.add_argument("--rate", type=float, default=100.0)
    drive_parser.add_argument("--duration", type=float, default=20.0)
    drive_parser.add_argument("--warmup", type=float, default=2.0)
    drive_parser.add_argument("--steps", type=lambda text: [int(x) for x in text.split(",") if x], default=[])
    drive_parser.add_argument("--step-s", type=float, default=5.0)
    drive_parser.add_argument("--pause", type=float, default=1.0)
    drive_parser.add_argument("--channels", type=int, default=4)
    drive_parser.add_argument("--max-in-flight", type=int, default=4000)
    args = parser.parse_args(argv)
    install_uvloop()
    if args.command == "drive":
        result = asyncio.run(drive(args))
        _emit({"event": "result", **result})
        return 0
    if args.role == "exchange":
        asyncio.run(serve_exchange(args.port))
    elif args.role == "user":
        asyncio.run(serve_user(args.port, args.db))
    elif args.role == "gateway":
        asyncio.run(serve_gateway(args.port, args.exchange, args.db))
    else:
        asyncio.run(serve_order(args.port, args.user, args.gateway, args.db))
    return 0


if __name__ == "__main__":
    sys.exit(main())
