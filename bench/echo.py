"""The one-hop ceiling: a bare grpc.aio unary echo server and a closed-loop client, in separate processes.

``python -m bench.echo serve --port P`` serves ``/bench.Echo/Call`` (bytes in, the same bytes out, no
protobuf, uvloop, SO_REUSEPORT off) and prints ``ready PORT``, the port it bound (``--port 0``, the
default, picks a free one). ``python -m bench.echo drive --target ADDR --duration S`` keeps
``--concurrency`` calls in flight over ``--channels`` connections and prints one JSON line: the
calls per second and their latency percentiles.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
import time
from typing import Any

import grpc

from bench.stats import latency_summary
from shared.server import install_uvloop

METHOD = "/bench.Echo/Call"
# About the size of a serialized PlaceOrderRequest with its metadata.
PAYLOAD = b"x" * 96


async def serve(port: int) -> None:
    """Serve the echo method until SIGTERM or SIGINT."""

    async def call(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
        return request

    handler = grpc.method_handlers_generic_handler("bench.Echo", {"Call": grpc.unary_unary_rpc_method_handler(call)})
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"ready {bound}", flush=True)
    await stop.wait()
    await server.stop(0.5)


async def drive(target: str, duration: float, concurrency: int, channels: int, warmup: float) -> dict[str, Any]:
    """Closed loop: ``concurrency`` workers each send the next call when the previous one returns."""
    opened = [
        grpc.aio.insecure_channel(target, options=(("grpc.use_local_subchannel_pool", 1), ("bench.channel", i)))
        for i in range(channels)
    ]
    for channel in opened:
        await asyncio.wait_for(channel.channel_ready(), timeout=10)
    calls = [channel.unary_unary(METHOD) for channel in opened]
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = 0.0

    async def worker(index: int) -> None:
        nonlocal errors
        call = calls[index % len(calls)]
        while True:
            started = time.perf_counter()
            if measuring and started >= stop_at:
                return
            try:
                await call(PAYLOAD, timeout=10)
            except grpc.aio.AioRpcError:
                if measuring:
                    errors += 1
                continue
            if measuring:
                latencies.append(time.perf_counter() - started)

    async def run_for(seconds: float) -> None:
        nonlocal stop_at
        stop_at = time.perf_counter() + seconds
        await asyncio.gather(*(worker(i) for i in range(concurrency)))

    measuring = True
    await run_for(warmup)  # warm-up: same loop, results discarded below
    latencies.clear()
    errors = 0
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    await run_for(duration)
    elapsed = time.perf_counter() - started
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    for channel in opened:
        await channel.close()
    cpu = (usage1.ru_utime + usage1.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "calls": len(latencies),
        "errors": errors,
        "duration_s": round(elapsed, 3),
        "concurrency": concurrency,
        "channels": channels,
        "latency": latency_summary(latencies),
        "client_cpu_pct": round(100 * cpu / elapsed, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the server or the client."""
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("--port", type=int, default=0)
    drive_parser = sub.add_parser("drive")
    drive_parser.add_argument("--target", required=True)
    drive_parser.add_argument("--duration", type=float, default=10.0)
    drive_parser.add_argument("--warmup", type=float, default=1.0)
    drive_parser.add_argument("--concurrency", type=int, default=64)
    drive_parser.add_argument("--channels", type=int, default=4)
    args = parser.parse_args(argv)
    install_uvloop()
    if args.command == "serve":
        asyncio.run(serve(args.port))
        return 0
    result = asyncio.run(drive(args.target, args.duration, args.concurrency, args.channels, args.warmup))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
