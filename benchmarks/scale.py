"""A million passages on one machine: build, serve and search an index at MS MARCO's scale.

    python benchmarks/scale.py                     # 250,000 and 1,000,000 × 768 (~1 hour)
    python benchmarks/scale.py --sizes 1000000     # one size
    python benchmarks/scale.py --quick             # 20,000 and 50,000 (a few minutes)

Vectors come from the calibrated generator of `benchmarks/index.py` (real MiniLM passage
vectors lifted into 768 dimensions, mixed with their neighbours and noise; real encoded
queries), texts from the generated corpus of `benchmarks/encoder.py` (2-6 sentences). They
are written as vector shards in the format `bertdot index import` reads, stamped with the
fingerprint of the seed-shaped artifact (768-dim, dot product), so the index is built through
the import path, as a corpus encoded elsewhere (on a Ray cluster) would be: no encoding here.

Per size: `bertdot index import` (wall time, peak RSS of the process), the index's files on
disk, the passage store's quick_check, `bertdot serve` start-up (seconds to SERVING, its
RSS), a graph snapshot (`Index.save_graph`), and per `ef`: recall@10 against exact search
(ties count as hits) and p50/p99 of one query per call, through `Index.search` as the
server's search stage runs it (graph + store lookup) and through the graph alone. The
recommended `ef` is the smallest reaching recall 0.99. From two sizes the bill for 8.8M
passages (MS MARCO) is extrapolated: memory and disk per passage, and build time by the
measured growth exponent.

`--compact` adds, on the largest size, the compact vector kinds (`--vectors f16` and `i8`:
the graph in usearch, candidates rescored with the store's float32 vectors), through the same
import, serve and search: memory, build time, recall and latency beside hnswlib's float32.
Writes `scale.json` and `scale.md` under `--out`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_info, markdown_table, write_report
from encoder import DEFAULT_CACHE, generated_corpus, prepare
from index import _unit, exact_top, lift, real_vectors, synthesize, tie_floor
from server_processes import ServerProcess, bertdot_command, status_kib

from bertdot.server.index.corpus import Passage
from bertdot.server.index.index import Index
from bertdot.server.indexing.shards import ShardsInfo, write_part
from server import git_commit

DIM = 768
NOISE = 0.45  # benchmarks/index.py's calibrated synthesis noise
K = 10
EFS = [64, 128, 256, 512, 1024]
VECTOR_BYTES = {"f32": 4, "f16": 2, "i8": 1}  # per dimension, in the graph
TARGET = 0.99
PART = 50_000
MSMARCO = 8_841_823


def write_shards(folder: Path, vectors: np.ndarray, texts: list[str], info: ShardsInfo) -> None:
    """Vector shards of `vectors`, reused only when they hold these very vectors (the pool
    they are synthesised from changes with the built-in corpus)."""
    digest = hashlib.sha256(np.ascontiguousarray(vectors[:: max(len(vectors) // 1000, 1)]))
    key = f"{len(vectors)} {digest.hexdigest()}"
    done = folder / "done"
    if done.is_file() and done.read_text(encoding="utf-8") == key:
        return
    shutil.rmtree(folder, ignore_errors=True)
    info.write(folder)
    for number, start in enumerate(range(0, len(vectors), PART)):
        rows = range(start, min(start + PART, len(vectors)))
        passages = [Passage(f"p{i}", None, texts[i % len(texts)]) for i in rows]
        write_part(folder, number, passages, np.ascontiguousarray(vectors[start : rows.stop]))
    done.write_text(key, encoding="utf-8")


def folder_bytes(path: Path) -> dict[str, int]:
    return {f.name: f.stat().st_size for f in path.iterdir() if f.is_file()}


def import_index(shards: Path, artifact: Path, out: Path, vectors: str, m: int) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    command = [*bertdot_command(), "index", "import", str(shards), "--model", str(artifact),
               "--out", str(out), "--no-progress", "--vectors", vectors, "--m", str(m)]  # fmt: skip
    started = time.perf_counter()
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    # The child's own peak (VmHWM), read until it exits: getrusage's figure for children is
    # polluted by this large parent's pages (the child starts as a copy of it).
    peak = 0
    while process.poll() is None:
        peak = max(peak, (status_kib(process.pid, "VmHWM") or 0) * 1024)
        time.sleep(0.2)
    wall = time.perf_counter() - started
    err = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise RuntimeError(f"import failed: {err.strip()[-500:]}")
    return {"import_s": round(wall, 1), "import_peak_rss_bytes": peak,
            "output": err.strip().splitlines()[-1:]}  # fmt: skip


def serve_startup(artifact: Path, index: Path, log: Path) -> dict[str, Any]:
    server = ServerProcess(
        ["--model", str(artifact), "--index", str(index), "--device", "cpu", "--precision", "fp32"],
        log,
    )
    with server:
        ready = server.wait_ready(1800)
        memory = server.memory_bytes()
    return {"serve_ready_s": round(ready, 1), "serve_rss_bytes": memory.get("VmRSS")}


def sweep(
    index: Index, vectors: np.ndarray, queries: np.ndarray, efs: Sequence[int]
) -> dict[str, Any]:
    _, exact_scores = exact_top(vectors, queries, K)
    floor = tie_floor(exact_scores)
    rows = {}
    for ef in efs:
        index.search(queries[:1], K, ef)  # warm
        hits, served, graph_only = [], [], []
        for i, query in enumerate(queries):
            single = query[None, :]
            started = time.perf_counter()
            found = index.search(single, K, ef)[0]
            served.append(time.perf_counter() - started)
            started = time.perf_counter()
            index.graph.search(single, K, ef)
            graph_only.append(time.perf_counter() - started)
            rows_of = np.array([int(h.id[1:]) for h in found], dtype=np.int64)
            hits.append(int(((vectors[rows_of] @ query) >= floor[i]).sum()))
        rows[ef] = {
            "recall": round(float(np.mean(hits)) / K, 4),
            "p50_ms": round(float(np.percentile(served, 50)) * 1000, 3),
            "p99_ms": round(float(np.percentile(served, 99)) * 1000, 3),
            "graph_p50_ms": round(float(np.percentile(graph_only, 50)) * 1000, 3),
        }
        print(f"    ef {ef}: {rows[ef]}", flush=True)
    reaching = [ef for ef in efs if rows[ef]["recall"] >= TARGET]
    return {"by_ef": rows, "recommended_ef": min(reaching) if reaching else None}


def measure_size(
    n: int,
    pool: np.ndarray,
    queries: np.ndarray,
    artifact: Path,
    args: argparse.Namespace,
    kinds: Sequence[str],
) -> tuple[list[dict[str, Any]], np.ndarray]:
    """Import, serve, snapshot and search an index of `n` passages for each vector kind."""
    from bertdot.server.encoding.artifact import load_manifest

    manifest = load_manifest(artifact)
    folder = args.cache / f"scale-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{n:,} passages: synthesising vectors and texts", flush=True)
    vectors = synthesize(pool, n, NOISE)
    texts, _ = generated_corpus(random.Random(0), min(n, 100_000), 0)
    info = ShardsInfo(
        manifest.fingerprint, manifest.similarity, manifest.dim, "benchmarks/scale.py"
    )
    write_shards(folder / "shards", vectors, texts, info)
    results = []
    for kind in kinds:
        result: dict[str, Any] = {"passages": n, "vectors": kind}
        out = folder / f"index-{kind}"
        print(f"  bertdot index import --vectors {kind}", flush=True)
        result |= import_index(folder / "shards", artifact, out, kind, args.m)
        files = folder_bytes(out)
        result["disk_bytes"] = sum(files.values())
        result["files"] = files
        result["graph_bytes_per_passage"] = round(
            sum(v for name, v in files.items() if name.startswith("graph.")) / n
        )
        print("  bertdot serve start-up", flush=True)
        result |= serve_startup(artifact, out, folder / f"serve-{kind}.log")
        started = time.perf_counter()
        index = Index.open(out, writer=True)
        result["open_s"] = round(time.perf_counter() - started, 1)
        result["store_check_s"] = round(index.store_check_s or 0.0, 2)
        try:
            started = time.perf_counter()
            index.save_graph()
            result["snapshot_s"] = round(time.perf_counter() - started, 1)
            print("  search sweep", flush=True)
            result["search"] = sweep(index, vectors, queries, args.efs)
        finally:
            index.close()
        shutil.rmtree(out, ignore_errors=True)  # the next kind needs the disk
        print(f"  {json.dumps({k: v for k, v in result.items() if k != 'search'})}", flush=True)
        results.append(result)
    return results, vectors


def extrapolate(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    small, large = sizes[0], sizes[-1]
    growth = np.log(large["import_s"] / small["import_s"]) / np.log(
        large["passages"] / small["passages"]
    )
    per = {key: (large[key] - small[key]) / (large["passages"] - small["passages"])
           for key in ("import_peak_rss_bytes", "disk_bytes", "serve_rss_bytes")}  # fmt: skip
    return {
        "passages": MSMARCO,
        "build_growth_exponent": round(float(growth), 2),
        "import_s": round(large["import_s"] * (MSMARCO / large["passages"]) ** growth),
        **{key: int(large[key] + per[key] * (MSMARCO - large["passages"])) for key in per},
        "bytes_per_passage": {key: round(value) for key, value in per.items()},
    }


def gib(value: float | None) -> str:
    return "–" if value is None else f"{value / 2**30:.2f} GiB"


def render(data: dict[str, Any]) -> str:
    lines = ["# An index of a million passages on one machine", "",
             f"`{data['command']}` at commit {data['commit']}; {data['machine']['cpu']}, "
             f"{data['machine']['cores']} cores. HNSW M={data.get('m', 16)}, ef_construction=200, "
             "768 dims.", ""]  # fmt: skip
    rows = [[f"{s['passages']:,}", s["vectors"], f"{s['import_s']} s",
             gib(s["import_peak_rss_bytes"]), gib(s["disk_bytes"]), f"{s['store_check_s']} s",
             f"{s['serve_ready_s']} s",
             gib(s["serve_rss_bytes"]), f"{s['snapshot_s']} s", s["search"]["recommended_ef"]]
            for s in data["sizes"]]  # fmt: skip
    lines.append(markdown_table(["passages", "vectors", "import (build)", "import peak RSS", "disk",
                                 "store quick_check", "serve start-up", "serve RSS",
                                 "snapshot", "recommended ef"], rows))  # fmt: skip
    lines += ["", "## The graph's memory per passage", ""]
    rows = []
    for s in data["sizes"]:
        if "graph_bytes_per_passage" not in s:
            continue
        total, vector = s["graph_bytes_per_passage"], DIM * VECTOR_BYTES[s["vectors"]]
        f32 = [o["graph_bytes_per_passage"] for o in data["sizes"] if o["vectors"] == "f32"
               and o["passages"] == s["passages"] and "graph_bytes_per_passage" in o]  # fmt: skip
        share = f"{total / f32[0]:.0%}" if f32 else "–"
        rows.append([f"{s['passages']:,}", s["vectors"], total, vector, total - vector, share])
    lines.append(markdown_table(["passages", "vectors", "graph file B/passage", "vectors",
                                 "links and bookkeeping", "of f32's graph"], rows))  # fmt: skip
    for size in data["sizes"]:
        lines += ["", f"## {size['passages']:,} passages, {size['vectors']} vectors: per ef", ""]
        rows = [[ef, r["recall"], r["p50_ms"], r["p99_ms"], r["graph_p50_ms"]]
                for ef, r in size["search"]["by_ef"].items()]  # fmt: skip
        lines.append(markdown_table(["ef", "recall@10", "search p50 ms (graph + store)",
                                     "p99 ms", "graph alone p50 ms"], rows))  # fmt: skip
    if "msmarco" in data:
        m = data["msmarco"]
        lines += ["", f"## The bill for {m['passages']:,} passages (MS MARCO), extrapolated", "",
                  f"Build time grows as n^{m['build_growth_exponent']} here: about "
                  f"{m['import_s'] / 3600:.1f} h to import; peak RSS "
                  f"{gib(m['import_peak_rss_bytes'])}, disk {gib(m['disk_bytes'])}, serving RSS "
                  f"{gib(m['serve_rss_bytes'])}; per passage "
                  f"{m['bytes_per_passage']}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[250_000, 1_000_000])  # fmt: skip
    parser.add_argument(
        "--compact",
        action="store_true",
        help="also f16 and i8 vectors (usearch) at the largest size",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--m", type=int, default=16, help="HNSW links per node (16)")
    parser.add_argument("--efs", type=lambda s: [int(x) for x in s.split(",")], default=EFS)
    parser.add_argument("--name", help="report file stem (scale, scale-quick, scale-m32, ...)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes = [20_000, 50_000]
    name = args.name or (
        "scale" + ("-quick" if args.quick else "") + (f"-m{args.m}" if args.m != 16 else "")
    )
    started = time.perf_counter()
    data: dict[str, Any] = {
        "command": "python benchmarks/scale.py " + " ".join(argv or sys.argv[1:]),
        "commit": git_commit(),
        "machine": machine_info(["hnswlib", "usearch", "numpy"]),
        "m": args.m,
        "sizes": [],
    }
    _, artifact = prepare("seed", args.cache, False)
    real = real_vectors(args.cache, False)
    pool = _unit(lift(real.pool, DIM))
    queries = _unit(lift(real.queries, DIM))
    for n in args.sizes:
        kinds = ["f32", "f16", "i8"] if args.compact and n == max(args.sizes) else ["f32"]
        results, _ = measure_size(n, pool, queries, artifact, args, kinds)
        data["sizes"].extend(results)
        write_report(args.out, name, data, render(data))
    float32 = [s for s in data["sizes"] if s["vectors"] == "f32"]
    if len(float32) >= 2:
        data["msmarco"] = extrapolate(float32)
    data["machine"]["load_average_end"] = load_average()
    data["wall_s"] = round(time.perf_counter() - started, 1)
    for path in write_report(args.out, name, data, render(data)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
