"""One table from the GPU benchmark results (`benchmarks/gpu.sh` prints it at the end).

    python benchmarks/gpu_table.py [RESULTS_DIR]

Reads `encoder-seed-cuda.json` and `server-seed-cuda.json`, checks the GPU targets (one
H100, seed-shaped model): encode of one 32-token query p50 ≤ 1.5 ms; server end to end p50
≤ 2.5 ms at concurrency 1; ≥ 5,000 queries/s at concurrency 256. Writes `gpu-seed.md`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table

ENCODE_P50_MS, SERVER_P50_MS, QPS_AT_256 = 1.5, 2.5, 5000.0


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _run(server: dict[str, Any], mode: str, concurrency: int) -> dict[str, Any] | None:
    for run in server.get("runs", []):
        if run.get("mode") == mode and run.get("concurrency") == concurrency and "bench" in run:
            return dict(run["bench"])
    return None


def table(results: Path) -> str:
    encoder = _load(results / "encoder-seed-cuda.json")
    server = _load(results / "server-seed-cuda.json")
    rows: list[list[object]] = []
    device = "unknown GPU"
    if encoder:
        device = encoder["machine"].get("gpu") or device
        for shape, stats in encoder["speed"].items():
            rows.append(
                [f"encode {shape} (texts × tokens)", f"{stats['bertdot-ort']['median_ms']:.3f} ms",
                 f"PyTorch fp16 {stats['pytorch']['median_ms']:.3f} ms", ""]
            )  # fmt: skip
        p50 = encoder["speed"]["1x32"]["bertdot-ort"]["median_ms"]
        rows.append(["encode 1 × 32 tokens, p50", f"{p50:.3f} ms", f"≤ {ENCODE_P50_MS} ms",
                     "met" if p50 <= ENCODE_P50_MS else "not met"])  # fmt: skip
    if server:
        for mode in ("unary", "stream"):
            for c in server["settings"]["concurrency"]:
                bench = _run(server, mode, c)
                if bench is None:
                    continue
                lat = bench["latency_ms"]
                rows.append(
                    [f"server {mode} c={c}", f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms",
                     f"{bench['throughput_qps']:,.0f} q/s, batch {bench.get('mean_batch_size')}",
                     f"errors {sum(bench.get('errors', {}).values())}"]
                )  # fmt: skip
        c1 = _run(server, "unary", 1)
        if c1:
            p50 = c1["latency_ms"]["p50"]
            rows.append(["server unary c=1, p50", f"{p50:.2f} ms", f"≤ {SERVER_P50_MS} ms",
                         "met" if p50 <= SERVER_P50_MS else "not met"])  # fmt: skip
        best = max(
            (b["throughput_qps"] for m in ("unary", "stream") if (b := _run(server, m, 256))),
            default=None,
        )
        if best is not None:
            rows.append(["server c=256, best mode", f"{best:,.0f} q/s", f"≥ {QPS_AT_256:,.0f} q/s",
                         "met" if best >= QPS_AT_256 else "not met"])  # fmt: skip
    lines = [f"# GPU benchmark: seed-shaped model on {device}", ""]
    if not rows:
        lines.append("No results found (encoder-seed-cuda.json, server-seed-cuda.json).")
    else:
        lines.append(markdown_table(["what", "bertdot", "reference / target", ""], rows))
    return "\n".join(lines) + "\n"


def main() -> int:
    results = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results")
    text = table(results)
    (results / "gpu-seed.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
