"""The load process: ``python -m bench.load --spec spec.json --out result.json``.

It drives the order service open-loop: request ``i`` of a phase is due at ``t0 + i / rate`` and its
latency is measured from that due time, so a slow server, a full in-flight window or a generator
that cannot keep up all show as latency instead of silently lowering the offered rate. It prints
one JSON line per event on stdout (phase start, one tick per second, phase end) for the
orchestrator, and writes the full result to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
import time
from array import array
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import grpc

from bench.stats import KeepUp, SaturationCurve, latency_summary, quick_p95_ms
from bench.workload import CANCEL, REST, OpStream, OrderFactory, OrderSpec, SymbolRules
from trading.gateway.v1 import gateway_service_pb2, gateway_service_pb2_grpc
from trading.order.v1 import order_pb2, order_service_pb2, order_service_pb2_grpc
from trading.user.v1 import user_service_pb2, user_service_pb2_grpc

KIND_REST, KIND_MARKETABLE, KIND_CANCEL = 0, 1, 2
KIND_NAMES = {KIND_REST: "rest", KIND_MARKETABLE: "marketable", KIND_CANCEL: "cancel"}
RPC_OF_KIND = {KIND_REST: "PlaceOrder", KIND_MARKETABLE: "PlaceOrder", KIND_CANCEL: "CancelOrder"}

OPEN_STATUSES = (order_pb2.ORDER_STATUS_PENDING, order_pb2.ORDER_STATUS_PARTIALLY_FILLED)
TERMINAL_STATUSES = (
    order_pb2.ORDER_STATUS_FILLED,
    order_pb2.ORDER_STATUS_CANCELLED,
    order_pb2.ORDER_STATUS_REJECTED,
    order_pb2.ORDER_STATUS_EXPIRED,
)
SIDES = {"BUY": order_pb2.ORDER_SIDE_BUY, "SELL": order_pb2.ORDER_SIDE_SELL}
TYPES = {"LIMIT": order_pb2.ORDER_TYPE_LIMIT, "MARKET": order_pb2.ORDER_TYPE_MARKET}
TIFS = {"": order_pb2.TIME_IN_FORCE_UNSPECIFIED, "GTC": order_pb2.TIME_IN_FORCE_GTC, "IOC": order_pb2.TIME_IN_FORCE_IOC}

CHANNEL_OPTIONS = (
    ("grpc.use_local_subchannel_pool", 1),  # one TCP connection per channel object
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
)


def emit(event: dict[str, Any]) -> None:
    """Write one event line for the orchestrator."""
    sys.stdout.write(json.dumps(event, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def cpu_seconds() -> float:
    """CPU time used by this process so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def place_request(spec: OrderSpec, client_order_id: str) -> order_service_pb2.PlaceOrderRequest:
    """The PlaceOrder request of an order the workload made."""
    return order_service_pb2.PlaceOrderRequest(
        symbol=spec.symbol,
        side=SIDES[spec.side],
        type=TYPES[spec.type],
        quantity=spec.quantity,
        price=spec.price,
        time_in_force=TIFS[spec.time_in_force],
        client_order_id=client_order_id,
    )


@dataclass
class Tracked:
    """What the generator knows about one order it placed."""

    client_id: str
    kind: int
    phase: Phase
    due: float
    user: int
    symbol: str
    order_id: str = ""
    status: int = 0  # last status seen (response or stream)
    filled_seen: float = 0.0
    unfilled_end: bool = False
    counted_open: bool = False  # counted in Generator.open_by_symbol (open at the exchange as far as we know)


@dataclass
class Phase:
    """The raw record of one phase: one entry per request, kept in full."""

    name: str
    rate: float
    duration: float
    report: bool = True
    t0: float = 0.0
    wall0: float = 0.0
    last_done: float = 0.0
    in_flight: int = 0
    kinds: array[int] = field(default_factory=lambda: array("b"))
    due: array[float] = field(default_factory=lambda: array("d"))
    lag: array[float] = field(default_factory=lambda: array("d"))
    latency: array[float] = field(default_factory=lambda: array("d"))
    codes: list[str] = field(default_factory=list)
    reject_reasons: Counter[str] = field(default_factory=Counter)
    cancel_failures: list[Tracked] = field(default_factory=list)
    fill_latency: list[float] = field(default_factory=list)
    marketable_accepted: int = 0
    marketable_unfilled: int = 0
    substituted_cancels: int = 0
    capped_rests: int = 0
    cpu0: float = 0.0
    cpu1: float = 0.0
    wall_elapsed: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Achieved rate, latency per RPC, errors by code, fill latency."""
        sent = len(self.codes)
        benign = sum(1 for t in self.cancel_failures if t.status == order_pb2.ORDER_STATUS_FILLED)
        errors: Counter[str] = Counter(c for c in self.codes if c != "OK")
        if benign:
            errors["FAILED_PRECONDITION"] -= benign
            if errors["FAILED_PRECONDITION"] <= 0:
                del errors["FAILED_PRECONDITION"]
        error_count = sum(errors.values())
        ok = sent - error_count - benign
        span = max(self.last_done - self.t0, self.duration, 1e-9)
        lat_all = [self.latency[i] for i in range(sent) if self.codes[i] == "OK"]
        rpcs: dict[str, Any] = {}
        for rpc in ("PlaceOrder", "CancelOrder"):
            kinds = {k for k, r in RPC_OF_KIND.items() if r == rpc}
            rows = [i for i in range(sent) if self.kinds[i] in kinds]
            ok_lat = [self.latency[i] for i in rows if self.codes[i] == "OK"]
            summary = latency_summary(ok_lat)
            summary["sent"] = len(rows)
            summary["errors_by_code"] = dict(Counter(self.codes[i] for i in rows if self.codes[i] != "OK"))
            rpcs[rpc] = summary
        overall = latency_summary(lat_all)
        fills = latency_summary(self.fill_latency)
        cpu_share = 100.0 * (self.cpu1 - self.cpu0) / self.wall_elapsed if self.wall_elapsed > 0 else 0.0
        return {
            "name": self.name,
            "target_rps": self.rate,
            "duration_s": self.duration,
            "sent": sent,
            "ok": ok,
            "achieved_rps": round(ok / span, 2),
            "span_s": round(span, 3),
            "p50_ms": overall["p50_ms"],
            "p95_ms": overall["p95_ms"],
            "p99_ms": overall["p99_ms"],
            "max_ms": overall["max_ms"],
            "mean_ms": overall["mean_ms"],
            "errors": error_count,
            "error_rate": round(error_count / sent, 6) if sent else 0.0,
            "errors_by_code": dict(errors),
            "reject_reasons": dict(self.reject_reasons),
            "cancel_after_fill": benign,
            "substituted_cancels": self.substituted_cancels,
            "capped_rests": self.capped_rests,
            "mix": {KIND_NAMES[k]: n for k, n in sorted(Counter(self.kinds).items())},
            "rpcs": rpcs,
            "send_lag": latency_summary(list(self.lag)),
            "fill_latency": {
                **fills,
                "marketable_accepted": self.marketable_accepted,
                "ended_unfilled": self.marketable_unfilled,
                "missing": max(self.marketable_accepted - fills["count"] - self.marketable_unfilled, 0),
            },
            "generator_cpu_pct": round(cpu_share, 1),
            "wall0": self.wall0,
        }


class Generator:
    """Open-loop load against the order service, with one WatchOrders stream per user."""

    def __init__(self, spec: dict[str, Any]):
        self.spec = spec
        self.users: list[dict[str, str]] = spec["users"]
        self.metadata = [(("authorization", f"Bearer {u['api_key']}"),) for u in self.users]
        self.rules = {s: SymbolRules.from_dict(s, d) for s, d in spec["symbols"].items()}
        self.symbols = sorted(self.rules)
        self.prices: dict[str, Decimal] = {s: Decimal(d["price"]) for s, d in spec["symbols"].items() if d.get("price")}
        seed = int(spec.get("seed", 1))
        self.ops = OpStream(seed=seed)
        self.factory = OrderFactory(self.rules, seed=seed)
        self.deadline = float(spec.get("deadline_s", 10.0))
        self.fill_wait = float(spec.get("fill_wait_s", 3.0))
        self.run_id = spec.get("run_id", "r")
        self.seq = 0
        self.user_rr = 0
        self.symbol_rr = 0
        self.side_rr: Counter[tuple[str, int]] = Counter()
        self.tracked: dict[str, Tracked] = {}
        self.open_rest: OrderedDict[str, Tracked] = OrderedDict()
        self.open_rest_peak = 0
        # The exchange caps open orders per symbol for the whole account (MAX_NUM_ORDERS): stay below it.
        self.open_cap = int(spec.get("open_orders_cap_per_symbol", 0)) or 10**9
        self.open_by_symbol: Counter[str] = Counter()
        self.open_by_symbol_peak: Counter[str] = Counter()
        self.price_interval = float(spec.get("price_interval_s", 0.2))
        self.price_from_fills = not spec.get("sim_url")  # without the exchange's ticker, follow the fills
        self.stream_errors: Counter[str] = Counter()
        self.stream_events = 0
        self.price_errors = 0
        self.phase: Phase | None = None
        self.phases: list[Phase] = []
        self.ticks: list[dict[str, Any]] = []
        self.window: list[tuple[float, bool]] = []
        self.window_lag = 0.0
        self.sem = asyncio.Semaphore(int(spec.get("max_in_flight", 4000)))
        self.channels: list[grpc.aio.Channel] = []
        self.stubs: list[order_service_pb2_grpc.OrderServiceStub] = []
        self.next_stub = 0
        self.start = time.perf_counter()
        self.tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ setup

    async def open(self) -> None:
        """Open the channels and the WatchOrders streams, and start the price feed."""
        target = self.spec["target"]
        for i in range(int(self.spec.get("channels", 4))):
            channel = grpc.aio.insecure_channel(target, options=(*CHANNEL_OPTIONS, ("bench.channel", i)))
            self.channels.append(channel)
            self.stubs.append(order_service_pb2_grpc.OrderServiceStub(channel))
        stream_channel = grpc.aio.insecure_channel(target, options=(*CHANNEL_OPTIONS, ("bench.channel", -1)))
        self.channels.append(stream_channel)
        stream_stub = order_service_pb2_grpc.OrderServiceStub(stream_channel)
        for channel in self.channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=10)
        for index in range(len(self.users)):
            self._spawn(self._watch(stream_stub, index))
        if self.spec.get("sim_url"):
            self._spawn(self._price_feed(self.spec["sim_url"]))
        await asyncio.sleep(0.5)  # let the streams subscribe before the first order

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """Stop background tasks and close the channels."""
        for task in list(self.tasks):
            task.cancel()
        for channel in self.channels:
            await channel.close()

    async def _watch(self, stub: order_service_pb2_grpc.OrderServiceStub, index: int) -> None:
        """Follow one user's order updates: fills of marketable orders, ends of resting ones."""
        while True:
            try:
                call = stub.WatchOrders(order_service_pb2.WatchOrdersRequest(), metadata=self.metadata[index])
                async for update in call:
                    self._on_update(update.order, time.perf_counter())
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                self.stream_errors[exc.code().name] += 1
            else:
                self.stream_errors["STREAM_ENDED"] += 1
            await asyncio.sleep(0.5)

    def _on_update(self, order: Any, now: float) -> None:
        self.stream_events += 1
        if self.price_from_fills and order.average_price and order.symbol in self.prices:
            with contextlib.suppress(ArithmeticError):
                price = Decimal(order.average_price)
                if price > 0:
                    self.prices[order.symbol] = price
        tracked = self.tracked.get(order.client_order_id)
        if tracked is None:
            return
        tracked.status = order.status
        if not tracked.order_id and order.order_id:
            tracked.order_id = order.order_id
        filled = order.status == order_pb2.ORDER_STATUS_FILLED
        if filled and tracked.kind == KIND_MARKETABLE and not tracked.filled_seen:
            tracked.filled_seen = now
            tracked.phase.fill_latency.append(now - tracked.due)
        if order.status in TERMINAL_STATUSES:
            self._ended(tracked, order.status)

    def _ended(self, tracked: Tracked, status: int) -> None:
        """Forget an order that reached a final status (the objects in cancel_failures keep their status)."""
        self.open_rest.pop(tracked.client_id, None)
        if tracked.counted_open:
            tracked.counted_open = False
            self.open_by_symbol[tracked.symbol] -= 1
        self.tracked.pop(tracked.client_id, None)
        if tracked.kind == KIND_MARKETABLE and status != order_pb2.ORDER_STATUS_FILLED and not tracked.unfilled_end:
            tracked.unfilled_end = True
            tracked.phase.marketable_unfilled += 1

    async def _price_feed(self, sim_url: str) -> None:
        """Poll the exchange's last prices twice a second (Binance's public ticker endpoint)."""
        import aiohttp

        url = f"{sim_url.rstrip('/')}/api/v3/ticker/price"
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                        data = await response.json()
                    for row in data if isinstance(data, list) else [data]:
                        if row.get("symbol") in self.rules:
                            self.prices[row["symbol"]] = Decimal(row["price"])
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.price_errors += 1
                await asyncio.sleep(self.price_interval)

    # ------------------------------------------------------------------ load

    def _next_user(self) -> int:
        self.user_rr = (self.user_rr + 1) % len(self.users)
        return self.user_rr

    def _next_symbol(self) -> str:
        self.symbol_rr = (self.symbol_rr + 1) % len(self.symbols)
        return self.symbols[self.symbol_rr]

    def _side(self, symbol: str, kind: int) -> str:
        self.side_rr[(symbol, kind)] += 1
        return "BUY" if self.side_rr[(symbol, kind)] % 2 else "SELL"

    def _stub(self) -> order_service_pb2_grpc.OrderServiceStub:
        self.next_stub = (self.next_stub + 1) % len(self.stubs)
        return self.stubs[self.next_stub]

    def _room(self) -> str | None:
        """The next symbol (round robin) with room for another resting order, or None if all are at the cap."""
        for _ in range(len(self.symbols)):
            symbol = self._next_symbol()
            if self.open_by_symbol[symbol] < self.open_cap:
                return symbol
        return None

    def _launch(self, phase: Phase, due: float) -> None:
        op = self.ops.next()
        phase.in_flight += 1
        room = self._room() if op == REST else None
        if op == REST and room is None and self.open_rest:
            phase.capped_rests += 1  # every symbol is at the exchange's open-order cap: cancel instead
            op = CANCEL
        if op == CANCEL:
            if self.open_rest:
                _, target = self.open_rest.popitem(last=False)
                self._spawn(self._cancel(phase, due, target))
                return
            phase.substituted_cancels += 1
            op = REST
        symbol = room or self._next_symbol()
        user = self._next_user()
        kind = KIND_REST if op == REST else KIND_MARKETABLE
        side = self._side(symbol, kind)
        last = self.prices[symbol]
        spec = self.factory.resting(symbol, side, last) if op == REST else self.factory.marketable(symbol, side, last)
        self.seq += 1
        client_id = f"b{self.run_id}{self.seq}"
        tracked = Tracked(client_id=client_id, kind=kind, phase=phase, due=due, user=user, symbol=symbol)
        self.tracked[client_id] = tracked
        self._spawn(self._place(phase, due, tracked, spec))

    def _record(self, phase: Phase, kind: int, due: float, sent: float, code: str) -> None:
        done = time.perf_counter()
        phase.kinds.append(kind)
        phase.due.append(due)
        phase.lag.append(sent - due)
        phase.latency.append(done - due)
        phase.codes.append(code)
        phase.last_done = max(phase.last_done, done)
        self.window.append((done - due, code == "OK"))
        self.window_lag = max(self.window_lag, sent - due)

    async def _place(self, phase: Phase, due: float, tracked: Tracked, spec: OrderSpec) -> None:
        request = place_request(spec, tracked.client_id)
        code = "OK"
        async with self.sem:
            sent = time.perf_counter()
            try:
                response = await self._stub().PlaceOrder(
                    request, metadata=self.metadata[tracked.user], timeout=self.deadline
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                self.tracked.pop(tracked.client_id, None)
            else:
                code = self._accepted(phase, tracked, response.order)
        phase.in_flight -= 1
        self._record(phase, tracked.kind, due, sent, code)

    def _accepted(self, phase: Phase, tracked: Tracked, order: Any) -> str:
        """Book the PlaceOrder response; return the result code ("OK" or "ORDER_REJECTED")."""
        if order.status == order_pb2.ORDER_STATUS_REJECTED:
            phase.reject_reasons[order.reject_reason or "?"] += 1
            self.tracked.pop(tracked.client_id, None)
            return "ORDER_REJECTED"
        tracked.order_id = tracked.order_id or order.order_id
        if tracked.kind == KIND_MARKETABLE:
            phase.marketable_accepted += 1
        seen_on_stream = tracked.status != 0
        if not seen_on_stream:
            tracked.status = order.status
        if tracked.status in TERMINAL_STATUSES:
            if seen_on_stream or tracked.kind != KIND_MARKETABLE:
                self._ended(tracked, tracked.status)  # the stream (or the response) already saw the end
            # Otherwise a marketable order the response shows final before the stream's event was read:
            # the change was published before the reply, but on another connection, so it may be read
            # later. Its stream event ends it (and times the fill); forgetting it now lost that fill.
        elif tracked.kind == KIND_REST and tracked.client_id in self.tracked:
            self.open_rest[tracked.client_id] = tracked
            self.open_rest_peak = max(self.open_rest_peak, len(self.open_rest))
            tracked.counted_open = True
            self.open_by_symbol[tracked.symbol] += 1
            peak = self.open_by_symbol_peak
            peak[tracked.symbol] = max(peak[tracked.symbol], self.open_by_symbol[tracked.symbol])
        return "OK"

    async def _cancel(self, phase: Phase, due: float, target: Tracked) -> None:
        code = "OK"
        async with self.sem:
            sent = time.perf_counter()
            try:
                response = await self._stub().CancelOrder(
                    order_service_pb2.CancelOrderRequest(order_id=target.order_id),
                    metadata=self.metadata[target.user],
                    timeout=self.deadline,
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:
                    phase.cancel_failures.append(target)  # classified at the end of the phase: filled meanwhile?
                elif target.status not in TERMINAL_STATUSES and target.client_id in self.tracked:
                    self.open_rest[target.client_id] = target  # still open: a later cancel may take it
            else:
                if response.order.status in TERMINAL_STATUSES:
                    target.status = response.order.status
                    self._ended(target, response.order.status)
        phase.in_flight -= 1
        self._record(phase, KIND_CANCEL, due, sent, code)

    async def serial(self, count: int, gap_s: float) -> dict[str, Any]:
        """One request at a time on a quiet stack: the latency floor of a placement and of a cancel.

        ``count`` times: place a resting LIMIT order, wait for the answer, cancel it, wait for the
        answer, pause ``gap_s``. Nothing else is in flight (run before any load phase), so these are
        the latencies of the whole chain with no queueing: what the fixed-rate phase cannot go below.
        """
        emit({"event": "serial_start", "count": count, "wall": time.time()})
        place: list[float] = []
        cancel: list[float] = []
        hops: dict[str, list[float]] = {"GetLastPrice": [], "ReserveFunds": [], "ReleaseFunds": []}
        errors: Counter[str] = Counter()
        internal = self.spec.get("internal")
        channels: list[grpc.aio.Channel] = []
        if internal:
            channels = [grpc.aio.insecure_channel(internal[k]) for k in ("gateway_target", "user_target")]
            gateway = gateway_service_pb2_grpc.ExchangeGatewayStub(channels[0])
            users = user_service_pb2_grpc.UserServiceStub(channels[1])
            service = (("authorization", f"Bearer {internal['service_token']}"),)
        for i in range(count):
            symbol = self._next_symbol()
            user = self._next_user()
            if internal:
                # One hop with no database (a cached price), then one durable transaction and its undo.
                order_id = f"probe{self.run_id}{i}"
                calls = (
                    ("GetLastPrice", gateway.GetLastPrice, gateway_service_pb2.GetLastPriceRequest(symbol=symbol)),
                    (
                        "ReserveFunds",
                        users.ReserveFunds,
                        user_service_pb2.ReserveFundsRequest(
                            order_id=order_id,
                            user_id=self.users[user]["user_id"],
                            asset=self.rules[symbol].quote,
                            amount="1",
                        ),
                    ),
                    (
                        "ReleaseFunds",
                        users.ReleaseFunds,
                        user_service_pb2.ReleaseFundsRequest(order_id=order_id, release_id=f"{order_id}:probe"),
                    ),
                )
                for name, call, message in calls:
                    started = time.perf_counter()
                    try:
                        await call(message, metadata=service, timeout=self.deadline)
                    except grpc.aio.AioRpcError as exc:
                        errors[f"{name} {exc.code().name}"] += 1
                    else:
                        hops[name].append(time.perf_counter() - started)
            side = self._side(symbol, KIND_REST)
            spec = self.factory.resting(symbol, side, self.prices[symbol])
            request = place_request(spec, f"s{self.run_id}{i}")
            metadata = self.metadata[user]
            started = time.perf_counter()
            try:
                response = await self._stub().PlaceOrder(request, metadata=metadata, timeout=self.deadline)
            except grpc.aio.AioRpcError as exc:
                errors[f"PlaceOrder {exc.code().name}"] += 1
                continue
            place.append(time.perf_counter() - started)
            if response.order.status not in TERMINAL_STATUSES:
                started = time.perf_counter()
                try:
                    await self._stub().CancelOrder(
                        order_service_pb2.CancelOrderRequest(order_id=response.order.order_id),
                        metadata=metadata,
                        timeout=self.deadline,
                    )
                except grpc.aio.AioRpcError as exc:
                    # FAILED_PRECONDITION: the price walked onto it and it filled meanwhile.
                    errors[f"CancelOrder {exc.code().name}"] += 1
                else:
                    cancel.append(time.perf_counter() - started)
            await asyncio.sleep(gap_s)
        for channel in channels:
            await channel.close()
        result = {
            "count": count,
            "gap_s": gap_s,
            "PlaceOrder": latency_summary(place),
            "CancelOrder": latency_summary(cancel),
            **({name: latency_summary(values) for name, values in hops.items()} if internal else {}),
            "errors": dict(errors),
        }
        emit({"event": "serial_end", "summary": result, "wall": time.time()})
        return result

    async def run_phase(self, name: str, rate: float, duration: float, report: bool = True) -> dict[str, Any]:
        """Offer ``rate`` requests/s for ``duration`` s open-loop, then drain; return the phase summary."""
        phase = Phase(name=name, rate=rate, duration=duration, report=report)
        self.phase = phase
        self.phases.append(phase)
        emit({"event": "phase_start", "phase": name, "rate": rate, "duration": duration, "wall": time.time()})
        phase.cpu0 = cpu_seconds()
        phase.wall0 = time.time()
        phase.t0 = t0 = time.perf_counter()
        total = round(rate * duration)
        interval = 1.0 / rate
        i = 0
        while i < total:
            now = time.perf_counter()
            while i < total and t0 + i * interval <= now:
                self._launch(phase, t0 + i * interval)
                i += 1
            if i < total:
                await asyncio.sleep(max(0.0, t0 + i * interval - time.perf_counter()))
        drain_deadline = time.perf_counter() + self.deadline + 5
        while phase.in_flight > 0 and time.perf_counter() < drain_deadline:
            await asyncio.sleep(0.02)
        fill_deadline = time.perf_counter() + self.fill_wait
        while (
            len(phase.fill_latency) + phase.marketable_unfilled < phase.marketable_accepted
            and time.perf_counter() < fill_deadline
        ):
            await asyncio.sleep(0.05)
        phase.cpu1 = cpu_seconds()
        phase.wall_elapsed = time.perf_counter() - t0
        summary = phase.summary()
        summary["open_resting_orders"] = len(self.open_rest)
        emit({"event": "phase_end", "phase": name, "summary": summary, "wall": time.time()})
        self.phase = None
        return summary

    async def ticker(self) -> None:
        """Once a second: completions, latency percentiles and errors of the last second."""
        while True:
            await asyncio.sleep(1.0)
            window, self.window = self.window, []
            lag, self.window_lag = self.window_lag, 0.0
            phase = self.phase
            ok = [lat for lat, good in window if good]
            lat = sorted(ok)
            tick: dict[str, Any] = {
                "event": "tick",
                "t": round(time.perf_counter() - self.start, 3),
                "wall": time.time(),
                "phase": phase.name if phase else "",
                "offered_rps": phase.rate if phase else 0,
                "completed": len(window),
                "ok": len(ok),
                "errors": len(window) - len(ok),
                "in_flight": phase.in_flight if phase else 0,
                "open_resting": len(self.open_rest),
                "max_send_lag_ms": round(lag * 1000, 3),
            }
            for p in (50, 95, 99):
                tick[f"p{p}_ms"] = round(lat[min(len(lat) - 1, int(len(lat) * p / 100))] * 1000, 3) if lat else None
            if phase is not None:
                tick["phase_p95_ms"] = quick_p95_ms(
                    [phase.latency[i] for i in range(len(phase.codes)) if phase.codes[i] == "OK"]
                )
            self.ticks.append(tick)
            emit(tick)

    async def saturate(self, config: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """Raise the offered rate step by step until the achieved rate stops rising; return the curve.

        When the phase before (the fixed rate) could not keep up, the steps start below its rate
        instead, after a pause for the backlog to clear, so that the figure is what the stack
        sustains rather than zero.
        """
        default = KeepUp()
        rule = KeepUp(
            ratio=float(config.get("keep_up", default.ratio)),
            max_error_rate=float(config.get("max_error_rate", default.max_error_rate)),
            max_p95_ms=float(config.get("max_p95_ms", default.max_p95_ms)),
        )
        steps = SaturationCurve(rule)
        rates = [int(r) for r in config["rates"]]
        if previous and (
            previous["error_rate"] > rule.max_error_rate
            or previous["achieved_rps"] < rule.ratio * previous["target_rps"]
        ):
            base = float(previous["target_rps"])
            lower = sorted({max(int(base * f), 1) for f in (0.1, 0.25, 0.5, 0.75)})
            rates = lower + [r for r in rates if r > lower[-1]]
            await asyncio.sleep(float(config.get("recover_s", 10.0)))
        for rate in rates:
            summary = await self.run_phase(f"sat-{rate}", float(rate), float(config["step_duration"]))
            if not steps.add(summary):
                break
            await asyncio.sleep(float(config.get("pause_s", 1.0)))
        return steps.result()


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run every phase of ``spec``; return the whole result."""
    gen = Generator(spec)
    await gen.open()
    ticker = asyncio.create_task(gen.ticker())
    phases: list[dict[str, Any]] = []
    saturation = None
    serial = None
    try:
        if spec.get("serial"):
            serial = await gen.serial(int(spec["serial"]["count"]), float(spec["serial"]["gap_s"]))
        for phase in spec.get("phases", []):
            rate, duration = float(phase["rate"]), float(phase["duration"])
            phases.append(await gen.run_phase(phase["name"], rate, duration, phase.get("report", True)))
        if spec.get("saturation"):
            saturation = await gen.saturate(spec["saturation"], phases[-1] if phases else None)
    finally:
        ticker.cancel()
        await gen.close()
    return {
        "serial": serial,
        "phases": phases,
        "saturation": saturation,
        "ticks": gen.ticks,
        "open_resting_peak": gen.open_rest_peak,
        "open_resting_end": len(gen.open_rest),
        "open_by_symbol_peak": dict(gen.open_by_symbol_peak),
        "open_orders_cap_per_symbol": gen.open_cap if gen.open_cap < 10**9 else None,
        "stream_errors": dict(gen.stream_errors),
        "stream_events": gen.stream_events,
        "price_feed_errors": gen.price_errors,
        "final_prices": {s: str(p) for s, p in gen.prices.items()},
        "generator_cpu_s": round(cpu_seconds(), 3),
    }


def main(argv: list[str] | None = None) -> int:
    """Read the spec, run, write the result."""
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__)
    parser.add_argument("--spec", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = asyncio.run(run(spec))
    args.out.write_text(json.dumps(result))
    emit({"event": "done"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
