"""What `bertdot bench` shows: the live progress line, the summary table, JSON and a plot.

The JSON and the table are built from one summary dict, so they never disagree.
matplotlib is imported only by ``plot`` (the ``plot`` extra), through its object API
rather than pyplot, so no global backend or figure state is touched.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any, TextIO

from hdrh.histogram import HdrHistogram

from bertdot.client.bench.config import BenchResult
from bertdot.client.bench.stats import STAGES, Snapshot

PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9))
PLOT_EXTRA_MESSAGE = "bertdot bench --plot needs the plot extra: pip install 'bertdot[plot]'"


def _ms(histogram: HdrHistogram) -> dict[str, float | None]:
    """Percentiles, max and mean in milliseconds; None everywhere for an empty histogram."""
    empty = histogram.get_total_count() == 0
    out: dict[str, float | None] = {
        key: None if empty else histogram.get_value_at_percentile(q) / 1000
        for key, q in PERCENTILES
    }
    out["max"] = None if empty else histogram.get_max_value() / 1000
    out["mean"] = None if empty else round(histogram.get_mean_value() / 1000, 3)
    return out


def summary(result: BenchResult) -> dict[str, Any]:
    """The JSON report: counts, throughput, client latency and the server's own timings."""
    config, stats, seconds = result.config, result.stats, result.duration_s
    return {
        "target": config.target,
        "mode": config.mode,
        "loop": "open" if config.open_loop else "closed",
        "concurrency": None if config.open_loop else config.concurrency,
        "connections": config.connections,
        "processes": config.processes,
        "rate": config.rate,
        "arrivals": config.arrivals if config.open_loop else None,
        "duration_s": round(seconds, 3),
        "requests": stats.requests,
        "ok": stats.ok_count,
        "errors": dict(sorted(stats.errors.items())),
        "dropped": stats.dropped,
        "throughput_qps": round(stats.requests / seconds, 2),
        "goodput_qps": round(stats.ok_count / seconds, 2),
        "latency_ms": _ms(stats.latency),
        # Open loop: actual minus intended send time; large values mean the generator
        # itself fell behind its schedule (that time is in the latencies too).
        "send_lag_ms": _ms(stats.send_lag) if config.open_loop else None,
        "server_ms": {stage: _ms(stats.server[stage]) for stage in STAGES},
        "mean_batch_size": (
            round(stats.batch_sum / stats.batch_count, 2) if stats.batch_count else None
        ),
    }


def write_json(report: dict[str, Any], path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(report: dict[str, Any]) -> str:
    """A plain-text summary for a person at a terminal."""
    if report["loop"] == "closed":
        load = f"closed loop, concurrency {report['concurrency']}"
    else:
        load = f"open loop, {report['rate']:g} q/s {report['arrivals']}"
    if report.get("connections", 1) > 1:
        load += f", {report['connections']} connections"
    if report.get("processes", 1) > 1:
        load += f", {report['processes']} processes"
    errors = ", ".join(f"{code} {n:,}" for code, n in report["errors"].items()) or "none"
    lines = [
        f"bertdot bench {report['target']}: {report['mode']}, {load}",
        f"  window      {report['duration_s']:.2f} s",
        f"  requests    {report['requests']:,} ({report['throughput_qps']:,.1f}/s,"
        f" ok {report['goodput_qps']:,.1f}/s)",
        f"  errors      {errors}",
        f"  dropped     {report['dropped']:,}",
        "",
        f"  {'ms':<16}" + "".join(f"{h:>10}" for h in ("p50", "p90", "p99", "p99.9", "max")),
    ]
    rows = [("client latency", report["latency_ms"])]
    if report["send_lag_ms"] is not None:
        rows.append(("send lag", report["send_lag_ms"]))
    rows += [(f"server {stage}", report["server_ms"][stage]) for stage in STAGES]
    for name, ms in rows:
        cells = [ms[key] for key, _ in PERCENTILES] + [ms["max"]]
        lines.append(f"  {name:<16}" + "".join(f"{_cell(v):>10}" for v in cells))
    batch = report["mean_batch_size"]
    lines.append(f"  mean batch size {'-' if batch is None else batch}")
    return "\n".join(lines)


class ProgressLine:
    """One line rewritten in place with ``\\r``: elapsed, requests, current q/s, p50/p99."""

    def __init__(self, out: TextIO, columns: int | None = None) -> None:
        self.out = out
        # A line longer than the terminal wraps, and "\r" then rewrites only its last part.
        self.columns = (columns or shutil.get_terminal_size((100, 24)).columns) - 1
        self.width = 0

    def __call__(self, s: Snapshot) -> None:
        phase = "warm-up" if s.warming_up else "measuring"
        p50, p99 = _cell(s.p50_ms), _cell(s.p99_ms)
        text = (
            f"{s.elapsed_s:6.1f}s {phase:<9} {s.requests:>9,} req {s.qps:>9,.0f}/s"
            f"  p50 {p50} ms  p99 {p99} ms  errors {s.errors:,}  dropped {s.dropped:,}"
        )
        text = text[: self.columns]
        self.width = max(self.width, len(text))
        self.out.write("\r" + text.ljust(self.width))
        self.out.flush()

    def close(self) -> None:
        if self.width:
            self.out.write("\r" + " " * self.width + "\r")
            self.out.flush()


def require_matplotlib() -> None:
    """Fail before the run, not after it, when ``--plot`` cannot be honoured."""
    if importlib.util.find_spec("matplotlib") is None:
        raise SystemExit(PLOT_EXTRA_MESSAGE)


def plot(result: BenchResult, path: str | Path) -> None:
    """Latency over time (each answer a dot, errors marked) and the latency distribution."""
    require_matplotlib()
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    stats = result.stats
    done = np.frombuffer(stats.done_s, dtype=np.float64)
    latency = np.frombuffer(stats.latency_ms, dtype=np.float64)
    fig = Figure(figsize=(12, 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    over_time, distribution = fig.subplots(1, 2)
    over_time.scatter(done, latency, s=2, alpha=0.4, rasterized=True, label="answer")
    errors = np.frombuffer(stats.error_s, dtype=np.float64)
    if errors.size:
        floor = float(latency.min()) if latency.size else 1.0
        over_time.plot(errors, np.full(errors.size, floor), "|", color="red", label="error")
    over_time.set(xlabel="time since warm-up (s)", ylabel="latency (ms)", title="latency over time")
    over_time.set_yscale("log")
    over_time.legend(loc="upper right")
    if latency.size:
        ordered = np.sort(latency)
        quantile = (np.arange(ordered.size) + 0.5) / ordered.size
        distribution.plot(1 / (1 - quantile), ordered)
        distribution.set_xscale("log")
        ticks = [q for q in (50, 90, 99, 99.9, 99.99) if 1 / (1 - q / 100) <= ordered.size]
        distribution.set_xticks([1 / (1 - q / 100) for q in ticks], [f"{q:g}%" for q in ticks])
    distribution.set(xlabel="percentile", ylabel="latency (ms)", title="latency distribution")
    distribution.grid(True, which="major", alpha=0.3)
    fig.suptitle(table(summary(result)).splitlines()[0])
    fig.savefig(path, dpi=100)
