"""Shared helpers for the benchmark scripts: machine facts, interleaved timing, reports."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def package_versions(names: Sequence[str]) -> dict[str, str]:
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def machine_info(packages: Sequence[str]) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cores": usable_cores(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": package_versions(packages),
        "load_average_start": load_average(),
    }


def _system_busy_s() -> float | None:
    """CPU seconds all processes have spent busy since boot, from /proc/stat (Linux)."""
    try:
        fields = Path("/proc/stat").read_text(encoding="utf-8").split("\n", 1)[0].split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    ticks = [int(x) for x in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


class OtherLoad:
    """How many cores' worth of CPU other processes used while the `with` body ran.

    System-wide busy time from /proc/stat minus this process's own CPU time, over the
    wall time; `cores` stays None where /proc/stat cannot be read.
    """

    def __init__(self) -> None:
        self.cores: float | None = None

    def __enter__(self) -> OtherLoad:
        self._start = (time.perf_counter(), _system_busy_s(), _own_cpu_s())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, own0 = self._start
        busy1 = _system_busy_s()
        if busy0 is None or busy1 is None:
            return
        wall = time.perf_counter() - wall0
        others = (busy1 - busy0) - (_own_cpu_s() - own0)
        self.cores = round(max(others, 0.0) / max(wall, 1e-9), 3)


def wait_for_quiet(max_wait_s: float, threshold_cores: float = 0.25) -> float | None:
    """Wait (up to `max_wait_s`) until other processes use under `threshold_cores` cores
    over a one-second window. Returns the last measured load (None without /proc/stat)."""
    deadline = time.monotonic() + max_wait_s
    while True:
        with OtherLoad() as load:
            time.sleep(1.0)
        if load.cores is None or load.cores < threshold_cores or time.monotonic() >= deadline:
            return load.cores
        print(f"  waiting for a quieter machine: others use {load.cores:.2f} cores", flush=True)


def interleaved(
    contenders: Mapping[str, Callable[[], object]],
    *,
    rounds: int,
    block: int,
    warmup: int = 2,
) -> dict[str, list[float]]:
    """Time each contender round-robin, `block` timed calls at a time, for `rounds` rounds.

    Each block starts with `warmup` untimed calls: the contender before may leave worker
    threads spinning (PyTorch's OpenMP pool does after every call), and the first calls
    after a switch would pay for them. Alternating blocks spreads machine drift over all
    contenders equally. Returns seconds per call.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, call in contenders.items():
            for _ in range(warmup):
                call()
            for _ in range(block):
                start = time.perf_counter()
                call()
                samples[name].append(time.perf_counter() - start)
    return samples


def summarize_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in seconds)
    deciles = statistics.quantiles(ms, n=10) if len(ms) > 1 else [ms[0]] * 9
    return {
        "median_ms": round(statistics.median(ms), 4),
        "p10_ms": round(deciles[0], 4),
        "p90_ms": round(deciles[-1], 4),
        "n": len(ms),
    }


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row of `a` with the same row of `b`."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out_dir: Path, stem: str, data: Mapping[str, Any], markdown: str) -> list[Path]:
    """Write `<stem>.json` and `<stem>.md` atomically (a temp file, then a rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, text in ((".json", json.dumps(data, indent=2) + "\n"), (".md", markdown)):
        path = out_dir / f"{stem}{suffix}"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
        written.append(path)
    return written
