"""Searches beside bulk work: is retrieval still interactive while a client encodes corpora?

    python benchmarks/mixed_load.py --model minilm     # the real all-MiniLM-L6-v2
    python benchmarks/mixed_load.py --model seed       # BERT_Dot-shaped DistilBERT
    python benchmarks/mixed_load.py --quick            # smoke run, about a minute

One `bertdot serve` process over an index of generated passages. Search clients (closed
loop, concurrency 1 and 8, one query per unary call) run alone, and again while a bulk
client keeps one Encode of 256 texts of about 256 tokens always in flight; the bulk client
also runs alone. Phases alternate in rounds, so drift hits every setting alike; medians over
rounds are reported with the ratios mixed/alone. With `--compare-unsliced` a second server,
whose slice budget holds a whole request (`--bulk-slice-tokens` of 10^9: bulk work as one
call, as before slicing), runs the same phases in the same rounds.

Targets (MiniLM, this CPU): search p99 under bulk load ≤ 2 × p99 alone + 300 ms; bulk
texts/s under query load ≥ 0.7 × alone. Writes `mixed-load-<model>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OtherLoad, load_average, machine_info, markdown_table, write_report
from encoder import DEFAULT_CACHE, prepare
from server_processes import ServerProcess, bertdot_command

from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from server import git_commit, write_inputs

BULK_TEXTS = 256
BULK_WORDS = 200  # about 256 tokens with the uncased BERT vocabulary
UNSLICED = 10**9


def bulk_texts(seed: int) -> list[str]:
    rng = random.Random(seed)
    vocabulary = [f"{a}{b}" for a in ("re", "con", "pro", "ex", "in") for b in
                  ("trieval", "text", "cess", "ample", "dex", "put", "vert", "tract")]  # fmt: skip
    common = ("the", "of", "and", "a", "to", "in", "is", "was", "for", "on", "with", "by")
    words = [*vocabulary, *common]
    return [" ".join(rng.choice(words) for _ in range(BULK_WORDS)) for _ in range(BULK_TEXTS)]


async def search_client(
    stub: pb_grpc.RetrievalStub, queries: Sequence[str], stop: asyncio.Event, out: list[float]
) -> None:
    n = random.randrange(len(queries))
    while not stop.is_set():
        started = time.perf_counter()
        await stub.Search(pb.SearchRequest(query=queries[n % len(queries)], k=10), timeout=120)
        out.append(time.perf_counter() - started)
        n += 1


async def bulk_client(
    stub: pb_grpc.RetrievalStub, texts: list[str], stop: asyncio.Event, done: list[float]
) -> None:
    """One Encode of `texts` always in flight; `done` gets the finish time of each."""
    while not stop.is_set():
        await stub.Encode(pb.EncodeRequest(texts=texts), timeout=600)
        done.append(time.perf_counter())


async def phase(
    target: str,
    queries: Sequence[str],
    texts: list[str],
    searchers: int,
    bulk: bool,
    seconds: float,
) -> dict[str, Any]:
    """`searchers` search clients and/or the bulk client for `seconds` after a warm-up."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        stop = asyncio.Event()
        latencies: list[float] = []
        finished: list[float] = []
        tasks = [
            asyncio.create_task(search_client(stub, queries, stop, latencies))
            for _ in range(searchers)
        ]
        if bulk:
            tasks.append(asyncio.create_task(bulk_client(stub, texts, stop, finished)))
        await asyncio.sleep(min(2.0, seconds / 4))  # warm-up: the bulk request under way
        latencies.clear()
        finished.clear()
        started = time.perf_counter()
        with OtherLoad() as others:
            await asyncio.sleep(seconds)
        window = time.perf_counter() - started
        searches = list(latencies)
        encodes = sum(1 for t in finished if t >= started)
        stop.set()
        await asyncio.wait(tasks, timeout=120)
        for task in tasks:
            task.cancel()
    out: dict[str, Any] = {"seconds": round(window, 2), "other_cores": others.cores}
    if searchers:
        out |= {
            "searches": len(searches),
            "p50_ms": round(float(np.percentile(searches, 50)) * 1000, 2) if searches else None,
            "p99_ms": round(float(np.percentile(searches, 99)) * 1000, 2) if searches else None,
        }
    if bulk:
        out["bulk_texts_per_s"] = round(encodes * len(texts) / window, 1)
    return out


def median_of(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


async def measure(servers: dict[str, str], args: argparse.Namespace, queries: list[str]) -> Any:
    texts = bulk_texts(args.seed)
    settings = [(f"search c={c}", c, False) for c in args.concurrency]
    settings += [(f"search c={c} + bulk", c, True) for c in args.concurrency]
    settings.append(("bulk alone", 0, True))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {label: [] for label, _, _ in settings} for name in servers
    }
    for round_no in range(args.rounds):
        for name, target in servers.items():
            for label, searchers, bulk in settings:
                measured = await phase(target, queries, texts, searchers, bulk, args.duration)
                results[name][label].append(measured)
                print(f"  round {round_no + 1} {name} {label}: {measured}", flush=True)
    summary: dict[str, Any] = {}
    for name, by_label in results.items():
        table: dict[str, Any] = {}
        for label, rounds in by_label.items():
            table[label] = {
                key: median_of(rounds, key) for key in ("p50_ms", "p99_ms", "bulk_texts_per_s")
            }
        alone_rate = table["bulk alone"]["bulk_texts_per_s"]
        for c in args.concurrency:
            alone, mixed = table[f"search c={c}"], table[f"search c={c} + bulk"]
            if alone["p99_ms"] and mixed["p99_ms"]:
                mixed["p99_ratio"] = round(mixed["p99_ms"] / alone["p99_ms"], 2)
                mixed["p99_target_ms"] = round(2 * alone["p99_ms"] + 300, 1)
                mixed["p99_met"] = mixed["p99_ms"] <= mixed["p99_target_ms"]
            if alone_rate and mixed["bulk_texts_per_s"] is not None:
                mixed["bulk_ratio"] = round(mixed["bulk_texts_per_s"] / alone_rate, 2)
                mixed["bulk_met"] = mixed["bulk_ratio"] >= 0.7
        summary[name] = table
    return {"rounds": results, "summary": summary}


def render(data: dict[str, Any]) -> str:
    lines = [f"# Mixed load: searches beside bulk Encode ({data['model']['name']})", ""]
    lines.append(f"`{data['command']}` at commit {data.get('commit')}; {data['machine']['cpu']}, "
                 f"{data['machine']['cores']} cores; {data['settings']}")  # fmt: skip
    for name, table in data["result"]["summary"].items():
        lines += ["", f"## {name}", ""]
        rows = []
        for label, cells in table.items():
            rows.append([label, cells.get("p50_ms"), cells.get("p99_ms"), cells.get("p99_ratio"),
                         cells.get("p99_target_ms"), cells.get("bulk_texts_per_s"),
                         cells.get("bulk_ratio")])  # fmt: skip
        headers = ["setting", "search p50 ms", "search p99 ms", "p99 × alone",
                   "p99 target ms", "bulk texts/s", "bulk × alone"]  # fmt: skip
        lines.append(markdown_table(headers, rows))
    machine = data["machine"]
    lines += ["", f"Medians over {data['settings']['rounds']} alternating rounds of "
              f"{data['settings']['duration_s']} s per setting; load average "
              f"{machine['load_average_start']} → {machine.get('load_average_end')}."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("minilm", "seed"), default="minilm")
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 8])  # fmt: skip
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per setting")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare-unsliced", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.passages = 4.0, 1, 500
    checkpoint, artifact = prepare(args.model, args.cache, False)
    folder = args.cache / f"mixed-load-{args.model}"
    corpus, _, _, queries = write_inputs(folder, args.passages, 200, args.seed)
    index = folder / f"index-{args.passages}"
    if not (index / "manifest.json").is_file():
        import subprocess

        subprocess.run([*bertdot_command(), "index", "build", "--model", str(artifact),
                        "--corpus", str(corpus), "--out", str(index), "--no-progress"],
                       check=True)  # fmt: skip
    base = ["--model", str(artifact), "--index", str(index), "--device", "cpu", "--read-only"]
    configs = {"bertdot (bulk in slices)": base}
    if args.compare_unsliced:
        configs["bulk as one call"] = [*base, "--bulk-slice-tokens", str(UNSLICED)]
    data: dict[str, Any] = {
        "command": "python benchmarks/mixed_load.py " + " ".join(argv or sys.argv[1:]),
        "commit": git_commit(),
        "machine": machine_info(["onnxruntime", "grpcio", "hnswlib"]),
        "model": {"name": args.model, "artifact": str(artifact), "checkpoint": str(checkpoint)},
        "settings": {
            "passages": args.passages,
            "concurrency": args.concurrency,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "bulk": f"{BULK_TEXTS} texts × ~256 tokens per Encode",
        },
    }
    servers = {name: ServerProcess(arguments, folder / f"server-{n}.log")
               for n, (name, arguments) in enumerate(configs.items())}  # fmt: skip
    for server in servers.values():
        server.__enter__()
    try:
        for server in servers.values():
            server.wait_ready(300)
        targets = {name: server.target for name, server in servers.items()}
        data["result"] = asyncio.run(measure(targets, args, queries))
    finally:
        for server in servers.values():
            server.stop()
    data["machine"]["load_average_end"] = load_average()
    for path in write_report(args.out, f"mixed-load-{args.model}", data, render(data)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
