"""Turn a run's figures into the printed table, the PASS/FAIL verdicts, the PNG and the JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SERVICES = ("exchange_simulator", "user_service", "exchange_gateway", "order_service")
CORE = ("user_service", "exchange_gateway", "order_service")
"""The trading core: what an operator runs (the simulator stands in for Binance, the load for the users)."""


def core_cpu_ms(per_request: dict[str, float]) -> float:
    """The trading core's CPU milliseconds per request: order, user and gateway services together."""
    return round(sum(per_request.get(name, 0.0) for name in CORE), 3)


def _fmt(value: Any, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}{unit}"
    return f"{value}{unit}"


def _verdict(name: str, target: str, measured: str, ok: bool | None, note: str = "") -> dict[str, Any]:
    status = "N/A" if ok is None else ("PASS" if ok else "FAIL")
    return {"name": name, "target": target, "measured": measured, "status": status, "note": note}


def bench_verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target of the issue, each with the measured figure (N/A when this run did not measure it)."""
    out = []
    fixed = result.get("fixed_rate") or {}
    rate = fixed.get("target_rps")
    at_100 = rate == 100
    note = "" if at_100 else f"measured at {rate}/s; the target is defined at 100/s"

    def at(ok: bool) -> bool | None:
        return ok if (at_100 and fixed) else None

    p95, p99 = fixed.get("p95_ms"), fixed.get("p99_ms")
    core = result.get("core_cpu_ms_per_request")
    out.append(
        _verdict(
            "trading core CPU per request at 100 orders/s (order + user + gateway)",
            "<= 6 ms",
            _fmt(core, 2, " ms"),
            at(core is not None and core <= 6),
            note,
        )
    )
    out.append(
        _verdict("p95 at 100 orders/s", "<= 25 ms", _fmt(p95, 2, " ms"), at(p95 is not None and p95 <= 25), note)
    )
    out.append(
        _verdict("p99 at 100 orders/s", "<= 50 ms", _fmt(p99, 2, " ms"), at(p99 is not None and p99 <= 50), note)
    )
    floor_p95 = (((result.get("floor") or {}).get("durable") or {}).get("fixed") or {}).get("p95_ms")
    within = None if (p95 is None or not floor_p95) else p95 <= 2 * floor_p95
    out.append(
        _verdict(
            "stack p95 / durable floor p95 at 100 orders/s",
            "<= 2",
            "-" if within is None else f"{p95 / floor_p95:.2f} ({_fmt(p95, 1)} / {_fmt(floor_p95, 1)} ms)",
            at(within) if within is not None else None,
            note,
        )
    )
    unloaded = ((result.get("serial") or {}).get("PlaceOrder") or {}).get("p50_ms")
    out.append(
        _verdict(
            "unloaded PlaceOrder p50",
            "<= 8 ms",
            _fmt(unloaded, 2, " ms"),
            None if unloaded is None else unloaded <= 8,
        )
    )
    errors = fixed.get("errors")
    out.append(
        _verdict(
            "errors at 100 orders/s",
            "none",
            f"{errors} of {fixed.get('sent')} ({_fmt(fixed.get('error_rate'), 4)})",
            at(errors == 0),
            note,
        )
    )
    sat = result.get("saturation") or {}
    achieved = sat.get("achieved_rps")
    # Kept up: the highest step that achieved at least 90% of its offered rate (the best step may not have).
    kept_up = (sat.get("sustainable") or {}).get("achieved_rps")
    ratio = result.get("ratio_to_echo")
    sat_ok = None
    if achieved is not None:
        sat_ok = kept_up is not None and kept_up >= 400
    out.append(
        _verdict(
            "saturation, end to end (kept up)",
            ">= 400 orders/s",
            f"{_fmt(kept_up, 0, '/s')} kept up, best step {_fmt(achieved, 0, '/s')} "
            f"(echo {_fmt(result.get('echo_rps'), 0, '/s')}, ratio {_fmt(ratio, 3)})",
            sat_ok if not result.get("quick") else None,
            "quick run: steps too short to saturate" if result.get("quick") else "",
        )
    )
    fill = result.get("fill_latency_p95_ms")
    out.append(
        _verdict(
            "marketable order to FILLED (WatchOrders), p95",
            "<= 50 ms",
            _fmt(fill, 2, " ms"),
            at(fill is not None and fill <= 50),
            note,
        )
    )
    total = result.get("peak_rss_total_mb")
    out.append(
        _verdict(
            "all processes together, peak RSS",
            "< 400 MB",
            f"{_fmt(total, 1, ' MB')} (sum of each service's peak)",
            None if total is None else total < 400,
        )
    )
    # The baseline targets, looser than those above, for comparison.
    out.append(
        _verdict(
            "baseline: p95 at 100 orders/s", "< 200 ms", _fmt(p95, 2, " ms"), at(p95 is not None and p95 < 200), note
        )
    )
    rate_err = fixed.get("error_rate")
    out.append(
        _verdict(
            "baseline: errors at 100 orders/s",
            "< 1%",
            _fmt(rate_err, 4),
            at(rate_err is not None and rate_err < 0.01),
            note,
        )
    )
    out.append(_verdict("baseline: memory", "< 1 GB", _fmt(total, 1, " MB"), None if total is None else total < 1024))
    cpu = result.get("fixed_rate_services_cpu_pct_of_machine")
    out.append(
        _verdict(
            "baseline: CPU at 100 orders/s (services, share of all cores)",
            "< 70%",
            _fmt(cpu, 1, "%"),
            at(cpu is not None and cpu < 70),
            note,
        )
    )
    return out


def soak_verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The soak's targets: memory growth, errors, ledgers."""
    soak = result.get("soak") or {}
    note = ""
    if soak.get("target_rps") != 100 or (soak.get("duration_s") or 0) < 600:
        note = f"this soak ran {soak.get('duration_s')} s at {soak.get('target_rps')}/s; the target is 600 s at 100/s"
    growth = soak.get("rss_growth_pct_total")
    errors = soak.get("errors")
    ledger_info = result.get("ledger") or {}
    ledger = ledger_info.get("consistent")
    return [
        _verdict(
            "soak: memory growth (services, start to end)",
            "< 10%",
            f"{_fmt(growth, 2, '%')} "
            f"({_fmt(soak.get('rss_start_total_mb'), 1)} -> {_fmt(soak.get('rss_end_total_mb'), 1)} MB)",
            None if growth is None else growth < 10,
            note,
        ),
        _verdict(
            "soak: errors",
            "none",
            f"{errors} of {soak.get('sent')} {soak.get('errors_by_code') or ''}".strip(),
            None if errors is None else errors == 0,
            note,
        ),
        _verdict(
            "soak: every ledger equals its balances",
            "all users",
            f"{ledger_info.get('users')} users, {ledger_info.get('mismatch_count')} mismatches",
            ledger,
            note,
        ),
    ]


def table(result: dict[str, Any]) -> str:
    """The human summary: machine, phases, per-RPC latency, processes, verdicts."""
    lines = _phase_lines(result)
    lines += _fixed_rate_lines(result)
    lines += _saturation_lines(result)
    lines += _serial_lines(result)
    echo = result.get("echo")
    if echo:
        lines.append(
            f"Echo (bare grpc.aio unary, {echo.get('concurrency')} in flight, {echo.get('channels')} channels): "
            f"{_fmt(result.get('echo_rps'), 0)}/s best of {echo.get('runs_rps')}; "
            f"ratio to echo {_fmt(result.get('ratio_to_echo'), 3)}"
        )
    lines.extend(floor_lines(result.get("floor") or {}))
    lines += _process_lines(result)
    ledger = result.get("ledger")
    if ledger:
        lines.append("")
        lines.append(
            f"Ledgers: {'consistent' if ledger.get('consistent') else 'NOT consistent'} "
            f"for {ledger.get('users')} users ({ledger.get('entries')} entries read, "
            f"{ledger.get('mismatch_count')} mismatches)"
        )
    lines.append("")
    lines.append("Targets:")
    for v in result.get("targets", []):
        note = f"  [{v['note']}]" if v.get("note") else ""
        lines.append(f"  {v['status']:<5} {v['name']:<58} target {v['target']:<34} measured {v['measured']}{note}")
    return "\n".join(lines)


def _phase_lines(result: dict[str, Any]) -> list[str]:
    """The machine, then each phase and saturation step: offered and achieved rates, latency, errors."""
    lines: list[str] = []
    machine = result.get("machine", {})
    lines.append(
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count')} CPUs, "
        f"{machine.get('memory_gb')} GB, {machine.get('platform')}, Python {machine.get('python')}, "
        f"grpcio {machine.get('grpcio')}"
    )
    lines.append(f"Services logged at LOG_LEVEL={result.get('settings', {}).get('log_level')} (access logs off).")
    lines.append("")
    header = f"{'phase':<12}{'offered/s':>10}{'achieved/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}"
    header += f"{'errors':>8}{'err rate':>9}{'fill p95':>9}{'gen cpu':>8}"
    lines.append(header)
    lines.append("-" * len(header))
    rows = [*result.get("phases", []), *((result.get("saturation") or {}).get("curve") or [])]
    for phase in rows:
        fill = (phase.get("fill_latency") or {}).get("p95_ms")
        lines.append(
            f"{phase['name']:<12}{phase['target_rps']:>10.0f}{phase['achieved_rps']:>11.1f}"
            f"{_fmt(phase.get('p50_ms'), 2):>9}{_fmt(phase.get('p95_ms'), 2):>9}{_fmt(phase.get('p99_ms'), 2):>9}"
            f"{_fmt(phase.get('max_ms'), 1):>9}{phase['errors']:>8}{phase['error_rate']:>9.4f}{_fmt(fill, 1):>9}"
            f"{_fmt(phase.get('generator_cpu_pct'), 0, '%'):>8}"
        )
    return lines


def _fixed_rate_lines(result: dict[str, Any]) -> list[str]:
    """The fixed-rate (or soak) run per RPC: latency, fills seen on WatchOrders, send lag, the mix sent."""
    lines: list[str] = []
    fixed = result.get("fixed_rate")
    if fixed:
        lines.append("")
        title = "Soak" if result.get("mode") == "soak" else "Fixed rate"
        lines.append(f"{title} ({fixed['target_rps']:.0f}/s for {fixed['duration_s']:.0f} s), per RPC:")
        for rpc, summary in (fixed.get("rpcs") or {}).items():
            lines.append(
                f"  {rpc:<12} n={summary['count']:<7} p50 {_fmt(summary['p50_ms'], 2)}"
                f"  p95 {_fmt(summary['p95_ms'], 2)}  p99 {_fmt(summary['p99_ms'], 2)}"
                f"  max {_fmt(summary['max_ms'], 1)} ms  errors {summary['errors_by_code'] or 0}"
            )
        fills = fixed.get("fill_latency") or {}
        lines.append(
            f"  marketable -> FILLED on WatchOrders: n={fills.get('count')} p50 {_fmt(fills.get('p50_ms'), 2)}"
            f"  p95 {_fmt(fills.get('p95_ms'), 2)}  p99 {_fmt(fills.get('p99_ms'), 2)} ms"
            f"  (not filled: {fills.get('ended_unfilled')}, never seen: {fills.get('missing')})"
        )
        lag = fixed.get("send_lag") or {}
        lines.append(
            f"  generator send lag (actual send - due): p99 {_fmt(lag.get('p99_ms'), 2)}"
            f"  max {_fmt(lag.get('max_ms'), 2)} ms"
        )
        lines.append(
            f"  mix sent: {fixed.get('mix')}; resting orders turned into cancels at the open-order cap: "
            f"{fixed.get('capped_rests', 0)}; "
            f"cancels with nothing open to cancel: {fixed.get('substituted_cancels', 0)}"
        )
        if fixed.get("errors_by_code"):
            lines.append(f"  errors by code: {fixed['errors_by_code']}  rejects: {fixed.get('reject_reasons')}")
        if fixed.get("cancel_after_fill"):
            lines.append(
                f"  cancels that lost the race with a fill (not counted as errors): {fixed['cancel_after_fill']}"
            )
    return lines


def _saturation_lines(result: dict[str, Any]) -> list[str]:
    """The saturation search: its best step and the highest step that kept up."""
    lines: list[str] = []
    sat = result.get("saturation")
    if sat:
        lines.append("")
        lines.append(
            f"Saturation: best {_fmt(sat.get('achieved_rps'), 1)}/s achieved "
            f"at {_fmt(sat.get('target_rps'), 0)}/s offered, p95 {_fmt(sat.get('p95_ms'), 2)} ms, "
            f"error rate {_fmt(sat.get('error_rate'), 4)}; stopped: {sat.get('stop_reason')}"
        )
        kept = sat.get("sustainable")
        if kept:
            lines.append(
                f"  highest step that kept up (>= 90% of offered, <= 1% errors, p95 <= 1 s): "
                f"{kept['achieved_rps']:.1f}/s at {kept['target_rps']:.0f}/s offered, p95 {_fmt(kept['p95_ms'], 2)} ms"
            )
        else:
            lines.append("  no step kept up (>= 90% of offered, <= 1% errors, p95 <= 1 s)")
    return lines


def _serial_lines(result: dict[str, Any]) -> list[str]:
    """Unloaded latency, one request at a time: placements, cancels and single hops."""
    lines: list[str] = []
    serial = result.get("serial")
    if serial:
        place, cancel = serial["PlaceOrder"], serial["CancelOrder"]
        lines.append(
            f"Unloaded (one request at a time, {serial['count']} placements each then cancelled): "
            f"PlaceOrder p50 {_fmt(place['p50_ms'], 2)} p95 {_fmt(place['p95_ms'], 2)} ms, "
            f"CancelOrder p50 {_fmt(cancel['p50_ms'], 2)} p95 {_fmt(cancel['p95_ms'], 2)} ms"
        )
        hops = [(k, serial[k]) for k in ("GetLastPrice", "ReserveFunds", "ReleaseFunds") if k in serial]
        if hops:
            lines.append(
                "  single hops, same way: "
                + ", ".join(f"{k} p50 {_fmt(v['p50_ms'], 2)} p95 {_fmt(v['p95_ms'], 2)} ms" for k, v in hops)
                + " (GetLastPrice: the gateway, no database; Reserve/ReleaseFunds: the user service, one durable"
                " transaction each)"
            )
    return lines


def _process_lines(result: dict[str, Any]) -> list[str]:
    """Peak RSS and CPU per process and phase, and CPU milliseconds per request."""
    lines: list[str] = []
    lines.append("")
    shown = result.get("cpu_phases_shown", [])
    lines.append(f"{'process':<20}{'peak RSS MB':>12}" + "".join(f"{'CPU ' + p[:12]:>18}" for p in shown))
    cpu = result.get("cpu_pct") or {}
    for name, rss in (result.get("peak_rss_mb") or {}).items():
        cells = "".join(f"{_fmt((cpu.get(p) or {}).get('cpu_pct', {}).get(name), 1, '%'):>18}" for p in shown)
        lines.append(f"{name:<20}{rss:>12.1f}{cells}")
    background = "".join(f"{_fmt((cpu.get(p) or {}).get('background_cpu_pct'), 1, '%'):>18}" for p in shown)
    lines.append(f"{'(other processes)':<20}{'':>12}{background}")
    lines.append(f"{'services total':<20}{_fmt(result.get('peak_rss_total_mb'), 1):>12}")
    lines.append("  CPU is % of one core, averaged over the phase; (other processes) is the rest of the machine.")
    per_request = result.get("cpu_ms_per_request") or {}
    if per_request:
        lines.append("")
        loaded = [p for p in shown if p in per_request]
        lines.append(f"{'CPU ms per request':<20}{'':>12}" + "".join(f"{p[:18]:>18}" for p in loaded))
        for name in [*SERVICES, "load_generator"]:
            cells = "".join(f"{_fmt((per_request.get(p) or {}).get(name), 2):>18}" for p in loaded)
            lines.append(f"{name:<20}{'':>12}{cells}")
        totals = "".join(
            f"{_fmt(sum((per_request.get(p) or {}).get(n, 0.0) for n in SERVICES), 2):>18}" for p in loaded
        )
        lines.append(f"{'services total':<20}{'':>12}{totals}")
        core = "".join(f"{_fmt(core_cpu_ms(per_request.get(p) or {}), 2):>18}" for p in loaded)
        lines.append(f"{'trading core':<20}{'':>12}{core}")
        lines.append("  trading core = order + user + gateway services (not the simulator or the load generator).")
    return lines


def floor_lines(floor: dict[str, Any]) -> list[str]:
    """The design's floor (bench.floor): the placement path's hops with nothing done in them."""
    if not floor:
        return []
    lines = ["Design floor (python -m bench.floor: a placement's hops through four stand-ins, nothing done in them):"]
    for variant, figures in floor.items():
        fixed = figures["fixed"]
        events = fixed.get("event_latency") or {}
        saturation = figures.get("saturation") or {}
        best = saturation.get("best") or {}
        kept = saturation.get("sustainable") or {}
        what = "with each hop's durable commits" if variant == "durable" else "the hops alone, no SQLite"
        lines.append(
            f"  {variant:<9} {what}: at {fixed['target_rps']:.0f}/s p50 {_fmt(fixed.get('p50_ms'), 2)}"
            f" p95 {_fmt(fixed.get('p95_ms'), 2)} p99 {_fmt(fixed.get('p99_ms'), 2)} ms,"
            f" event p95 {_fmt(events.get('p95_ms'), 2)} ms ({fixed.get('events_missing')} missing),"
            f" CPU {_fmt(fixed.get('cpu_ms_per_placement_stand_ins'), 2)} ms per placement"
        )
        lines.append(
            f"            saturation: best {_fmt(best.get('achieved_rps'), 0)}/s at {_fmt(best.get('target_rps'), 0)}/s"
            f" offered; highest step that kept up {_fmt(kept.get('achieved_rps'), 0)}/s at"
            f" {_fmt(kept.get('target_rps'), 0)}/s offered, p95 {_fmt(kept.get('p95_ms'), 1)} ms"
        )
    return lines


def write_json(result: dict[str, Any], path: Path) -> None:
    """Write the result file (creating its directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")


def plot(result: dict[str, Any], path: Path) -> None:
    """Latency percentiles and throughput per second over the run, the saturation curve and RSS over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ticks = [t for t in result.get("timeline") or [] if t.get("phase")]
    t0 = result.get("load_started_wall") or (ticks[0]["wall"] if ticks else 0.0)
    sat_curve = (result.get("saturation") or {}).get("curve") or []
    panels = 4 if sat_curve else 3
    fig, axes = plt.subplots(panels, 1, figsize=(12, 3.2 * panels), constrained_layout=True)
    ax_lat, ax_tp = axes[0], axes[1]
    xs = [t["wall"] - t0 - 0.5 for t in ticks]  # a tick covers the second before it

    def series(key: str) -> list[float]:
        return [float("nan") if t.get(key) is None else t[key] for t in ticks]

    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax_lat.plot(xs, series(key), label=label, linewidth=1)
    ax_lat.set_yscale("log")
    ax_lat.set_ylabel("latency per second (ms)")
    ax_lat.set_title(f"Trading core load benchmark ({result.get('mode')}, {result.get('timestamp')})")
    ax_tp.plot(xs, series("ok"), label="achieved (OK/s)", linewidth=1)
    ax_tp.plot(xs, series("offered_rps"), label="offered (/s)", linewidth=1, linestyle="--")
    ax_tp.plot(xs, series("errors"), label="errors/s", linewidth=1)
    ax_tp.set_ylabel("requests per second")
    for ax in (ax_lat, ax_tp):
        _shade_phases(ax, ticks, t0)
        ax.set_xlabel("seconds since the load started")
        ax.legend(loc="upper left", fontsize=8)
        ax.grid(alpha=0.3)
    index = 2
    if sat_curve:
        ax_sat = axes[index]
        index += 1
        offered = [p["target_rps"] for p in sat_curve]
        ax_sat.plot(offered, [p["achieved_rps"] for p in sat_curve], marker="o", label="achieved")
        ax_sat.plot(offered, offered, linestyle=":", color="grey", label="offered")
        ax_sat.set_xlabel("offered orders/s")
        ax_sat.set_ylabel("achieved orders/s")
        twin = ax_sat.twinx()
        twin.plot(
            offered, [p.get("p95_ms") or float("nan") for p in sat_curve], marker="x", color="tab:red", label="p95"
        )
        twin.set_ylabel("p95 (ms)")
        twin.set_yscale("log")
        echo = result.get("echo_rps")
        title = "Saturation curve"
        if echo:
            title += f" (echo ceiling {echo:.0f}/s)"
        ax_sat.set_title(title)
        ax_sat.legend(loc="upper left", fontsize=8)
        twin.legend(loc="lower right", fontsize=8)
        ax_sat.grid(alpha=0.3)
    ax_rss = axes[index]
    for name, points in (result.get("rss_series") or {}).items():
        if name not in (*SERVICES, "load_generator"):
            continue  # the echo and the design floor ran before the load: not on this time axis
        ax_rss.plot([p[0] - t0 for p in points], [p[1] for p in points], label=name, linewidth=1)
    ax_rss.set_ylabel("RSS (MB)")
    ax_rss.set_xlabel("seconds since the load started")
    ax_rss.legend(loc="upper left", fontsize=8)
    ax_rss.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _shade_phases(ax: Any, ticks: list[dict[str, Any]], t0: float) -> None:
    spans: list[tuple[str, float, float]] = []
    for tick in ticks:
        x = tick["wall"] - t0
        if spans and spans[-1][0] == tick["phase"]:
            spans[-1] = (spans[-1][0], spans[-1][1], x)
        else:
            spans.append((tick["phase"], x - 1, x))
    for i, (name, start, end) in enumerate(spans):
        if not name:
            continue
        ax.axvspan(start, end, alpha=0.06 if i % 2 else 0.12, color="tab:blue")
        ax.text((start + end) / 2, 1.0, name, transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=6)
