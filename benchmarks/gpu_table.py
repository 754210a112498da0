"""One table from the GPU benchmark results (`benchmarks/gpu.sh` prints it at the end).

    python benchmarks/gpu_table.py [RESULTS_DIR]

Reads `encoder-seed-cuda.json` and the server runs `server-seed-cuda*.json` (one process,
`--workers N`, `--no-cuda-graphs`), checks the GPU targets (one H100,
seed-shaped model): encode of one 32-token query p50 ≤ 1.5 ms; server end to end p50
≤ 2.5 ms at concurrency 1; ≥ 5,000 queries/s at concurrency 256 (the best server setup
counts). Writes `gpu-seed.md`.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table

ENCODE_P50_MS, SERVER_P50_MS, QPS_AT_256 = 1.5, 2.5, 5000.0
STAGES = ("queue", "tokenize", "encode", "search", "total")  # the server's own p50s
SERVER_RUN = re.compile(r"server-seed-cuda(-workers\d+)?(-nographs)?")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _run(server: dict[str, Any], mode: str, concurrency: int) -> dict[str, Any] | None:
    for run in server.get("runs", []):
        if run.get("mode") == mode and run.get("concurrency") == concurrency and "bench" in run:
            return dict(run["bench"])
    return None


def _label(data: dict[str, Any]) -> tuple[int, bool, str]:
    workers = int(data["settings"].get("workers") or 1)
    graphs = "--no-cuda-graphs" not in str(data["settings"].get("server_args") or "")
    label = "server" if workers == 1 else f"{workers} workers"
    return workers, not graphs, label + ("" if graphs else ", no CUDA graphs")


def _servers(results: Path) -> list[tuple[str, dict[str, Any]]]:
    """(label, result) of each server run: one process first, then by worker count."""
    found = []
    for path in sorted(results.glob("server-seed-cuda*.json")):
        # Not the quick runs, nor the older runs kept under other names beside them.
        if not SERVER_RUN.fullmatch(path.stem) or (data := _load(path)) is None:
            continue
        workers, plain, label = _label(data)
        found.append(((workers, plain), label, data))
    return [(label, data) for _, label, data in sorted(found, key=lambda f: f[0])]


def _encoder_rows(encoder: dict[str, Any]) -> list[list[object]]:
    rows: list[list[object]] = []
    for shape, stats in encoder["speed"].items():
        ours = f"{stats['bertdot-ort']['median_ms']:.3f} ms"
        if "bertdot-graphs" in stats:
            ours = f"{stats['bertdot-graphs']['median_ms']:.3f} ms graphs, {ours} plain"
        rows.append([f"encode {shape} (texts × tokens)", ours,
                     f"PyTorch fp16 {stats['pytorch']['median_ms']:.3f} ms", ""])  # fmt: skip
    one = encoder["speed"]["1x32"]
    name = "bertdot-graphs" if "bertdot-graphs" in one else "bertdot-ort"
    p50 = one[name]["median_ms"]
    how = "CUDA graphs" if name == "bertdot-graphs" else "plain"
    rows.append([f"encode 1 × 32 tokens, p50 ({how})", f"{p50:.3f} ms", f"≤ {ENCODE_P50_MS} ms",
                 "met" if p50 <= ENCODE_P50_MS else "not met"])  # fmt: skip
    return rows


def table(results: Path) -> str:
    encoder = _load(results / "encoder-seed-cuda.json")
    servers = _servers(results)
    rows: list[list[object]] = []
    device = "unknown GPU"
    if encoder:
        device = encoder["machine"].get("gpu") or device
        rows += _encoder_rows(encoder)
    for label, server in servers:
        for mode in ("unary", "stream"):
            for c in server["settings"]["concurrency"]:
                bench = _run(server, mode, c)
                if bench is None:
                    continue
                lat, stages = bench["latency_ms"], bench.get("server_ms", {})
                split = " / ".join(f"{stages[s]['p50']:.2f}" for s in STAGES if s in stages)
                rows.append(
                    [f"{label} {mode} c={c}", f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms",
                     f"{bench['throughput_qps']:,.0f} q/s, batch {bench.get('mean_batch_size')}",
                     f"errors {sum(bench.get('errors', {}).values())}; server {split} ms"]
                )  # fmt: skip
    for label, server in servers:
        for mode, floor in server.get("rpc_floor", {}).items():
            if mode != "error" and "error" not in floor["bench"]:
                p50 = floor["bench"]["latency_ms"]["p50"]
                rows.append([f"round trip alone ({label} run), {mode} c=1",
                             f"p50 {p50:.2f} ms", "echo server, no work", ""])  # fmt: skip
    c1 = [
        (b["latency_ms"]["p50"], f"{label}, {m}")
        for label, s in servers
        for m in ("unary", "stream")
        if (b := _run(s, m, 1))
    ]
    if c1:
        p50, label = min(c1)
        verdict = "met" if p50 <= SERVER_P50_MS else "not met"
        rows.append([f"server c=1, p50 (best: {label})", f"{p50:.2f} ms",
                     f"≤ {SERVER_P50_MS} ms", verdict])  # fmt: skip
    at_256 = [
        (b["throughput_qps"], f"{label}, {m}")
        for label, s in servers
        for m in ("unary", "stream")
        if (b := _run(s, m, 256))
    ]
    if at_256:
        best, label = max(at_256)
        verdict = "met" if best >= QPS_AT_256 else "not met"
        rows.append([f"server c=256 (best: {label})", f"{best:,.0f} q/s",
                     f"≥ {QPS_AT_256:,.0f} q/s", verdict])  # fmt: skip
    lines = [f"# GPU benchmark: seed-shaped model on {device}", ""]
    if not rows:
        lines.append("No results found (encoder-seed-cuda.json, server-seed-cuda*.json).")
    else:
        lines.append(markdown_table(["what", "bertdot", "reference / target", ""], rows))
        lines += ["", "Server rows end with the server's own p50s: " + " / ".join(STAGES) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results")
    text = table(results)
    (results / "gpu-seed.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
