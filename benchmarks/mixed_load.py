"""Searches beside bulk work: is retrieval still interactive while a client encodes corpora?

    python benchmarks/mixed_load.py --model minilm     # the real all-MiniLM-L6-v2
    python benchmarks/mixed_load.py --model seed       # BERT_Dot-shaped DistilBERT
    python benchmarks/mixed_load.py --quick            # smoke run, about a minute

One `bertdot serve` process over an index of generated passages. Search clients (closed
loop, concurrency 1 and 8, one query per unary call) run alone, and again while a bulk
client keeps one Encode of 256 texts of about 256 tokens always in flight; the bulk client
also runs alone. Such an Encode takes seconds to a minute on a CPU, so each bulk setting
runs from one Encode's completion to the first completion `--duration` seconds later: the
bulk rate counts whole calls, each made under that one setting, and every search started
in the window counts however long it waited. Settings alternate in rounds, so drift hits
every setting alike; medians over rounds are reported with the ratios mixed/alone. With
`--compare-unsliced` a second server, whose slice budget holds a whole request
(`--bulk-slice-tokens` of 10^9: bulk work as one call, as before slicing), runs the same
settings in the same rounds.

Targets (MiniLM, this CPU): search p99 under bulk load ≤ 2 × p99 alone + 300 ms; bulk
texts/s under query load ≥ 0.7 × alone. Writes `mixed-load-<model>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_info, markdown_table, write_report
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
    stub: pb_grpc.RetrievalStub,
    queries: Sequence[str],
    stop: asyncio.Event,
    out: list[tuple[float, float]],
) -> None:
    """Closed loop of unary Searches; `out` gets (start time, latency) of each."""
    n = random.randrange(len(queries))
    while not stop.is_set():
        started = time.perf_counter()
        await stub.Search(pb.SearchRequest(query=queries[n % len(queries)], k=10), timeout=600)
        out.append((started, time.perf_counter() - started))
        n += 1


class BulkClient:
    """One Encode of `texts` always in flight; `finished` holds the end time of each call.

    A 256-text Encode of long texts takes seconds to a minute on a CPU, so the bulk rate is
    measured between two completions (whole calls, no rounding to a call), and settings
    change at a completion: every call counted ran entirely under one setting.
    """

    def __init__(self, stub: pb_grpc.RetrievalStub, texts: list[str]) -> None:
        self.stub, self.texts = stub, texts
        self.finished: list[float] = []
        self._completed = asyncio.Condition()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.stub.Encode(pb.EncodeRequest(texts=self.texts), timeout=1800)
            async with self._completed:
                self.finished.append(time.perf_counter())
                self._completed.notify_all()

    async def next_completion(self) -> float:
        async with self._completed:
            count = len(self.finished)
            await self._completed.wait_for(lambda: len(self.finished) > count)
            return self.finished[-1]

    async def completion_after(self, moment: float) -> float:
        """The end time of the first call to finish at or after `moment` (perf_counter)."""
        while True:
            ended = await self.next_completion()
            if ended >= moment:
                return ended

    async def close(self) -> None:
        self._stop.set()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
            await self._task


async def after(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return time.perf_counter()


async def searches_during(
    stub: pb_grpc.RetrievalStub,
    queries: Sequence[str],
    searchers: int,
    until: Callable[[], Awaitable[float]],
) -> dict[str, Any]:
    """`searchers` closed-loop search clients from now until `until()` returns the window's
    end; every search started inside the window is counted, however long it waits."""
    stop = asyncio.Event()
    measured: list[tuple[float, float]] = []
    tasks = [
        asyncio.create_task(search_client(stub, queries, stop, measured)) for _ in range(searchers)
    ]
    started = time.perf_counter()
    ended = await until()
    stop.set()
    await asyncio.gather(*tasks)  # the searches in flight finish and are counted
    latencies = [latency for begun, latency in measured if started <= begun <= ended]
    out: dict[str, Any] = {"seconds": round(ended - started, 2)}
    if searchers:
        out |= {
            "searches": len(latencies),
            "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 2) if latencies else None,
            "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 2) if latencies else None,
        }
    return out


async def server_round(
    target: str, queries: Sequence[str], texts: list[str], args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """One round on one server: searches alone at each concurrency, then the bulk client
    alone and with each concurrency of searches, each setting from one Encode completion to
    the first completion at least `duration` seconds later."""
    results: dict[str, dict[str, Any]] = {}
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        for c in args.concurrency:
            await searches_during(stub, queries, c, partial(after, 1.0))  # warm-up
            results[f"search c={c}"] = await searches_during(
                stub, queries, c, partial(after, args.duration)
            )
        bulk = BulkClient(stub, texts)
        try:
            await bulk.next_completion()  # warm-up: settings start at a completion
            for label, c in [("bulk alone", 0)] + [(f"search c={c} + bulk", c)
                                                   for c in args.concurrency]:  # fmt: skip
                first = len(bulk.finished)
                window_start = bulk.finished[-1]
                until = partial(bulk.completion_after, window_start + args.duration)
                measured = await searches_during(stub, queries, c, until)
                calls = len(bulk.finished) - first
                span = bulk.finished[first + calls - 1] - window_start
                measured["bulk_calls"] = calls
                measured["bulk_texts_per_s"] = round(calls * len(texts) / span, 2)
                results[label] = measured
        finally:
            await bulk.close()
    return results


def median_of(rounds: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rounds if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


async def measure(servers: dict[str, str], args: argparse.Namespace, queries: list[str]) -> Any:
    texts = bulk_texts(args.seed)
    labels = [f"search c={c}" for c in args.concurrency] + ["bulk alone"]
    labels += [f"search c={c} + bulk" for c in args.concurrency]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {
        name: {label: [] for label in labels} for name in servers
    }
    for round_no in range(args.rounds):
        for name, target in servers.items():
            measured = await server_round(target, queries, texts, args)
            for label, cells in measured.items():
                results[name][label].append(cells)
                print(f"  round {round_no + 1} {name} {label}: {cells}", flush=True)
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
    def cell(value: Any) -> Any:
        if value is None:
            return "–"
        if isinstance(value, bool):
            return "yes" if value else "**no**"
        return value

    lines = [f"# Mixed load: searches beside bulk Encode ({data['model']['name']})", ""]
    lines.append(f"`{data['command']}` at commit {data.get('commit')}; {data['machine']['cpu']}, "
                 f"{data['machine']['cores']} cores; {data['settings']}")  # fmt: skip
    for name, table in data["result"]["summary"].items():
        lines += ["", f"## {name}", ""]
        rows = []
        for label, cells in table.items():
            searches = [r.get("searches") for r in data["result"]["rounds"][name][label]]
            rows.append([label, cell(median_of([{"n": n} for n in searches], "n")),
                         cell(cells.get("p50_ms")), cell(cells.get("p99_ms")),
                         cell(cells.get("p99_ratio")), cell(cells.get("p99_target_ms")),
                         cell(cells.get("p99_met")), cell(cells.get("bulk_texts_per_s")),
                         cell(cells.get("bulk_ratio")), cell(cells.get("bulk_met"))])  # fmt: skip
        headers = ["setting", "searches", "search p50 ms", "search p99 ms", "p99 × alone",
                   "p99 target ms", "p99 met", "bulk texts/s", "bulk × alone",
                   "bulk ≥ 0.7× met"]  # fmt: skip
        lines.append(markdown_table(headers, rows))
    machine = data["machine"]
    lines += ["", f"Medians over {data['settings']['rounds']} alternating rounds; search-only "
              f"settings run {data['settings']['duration_s']} s, bulk settings from one Encode's "
              "completion to the first completion that long after (whole calls). Targets: "
              "p99 under bulk ≤ 2 × p99 alone + 300 ms, bulk texts/s ≥ 0.7 × alone. Load "
              f"average {machine['load_average_start']} → "
              f"{machine.get('load_average_end')}."]  # fmt: skip
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
                        "--corpus", str(corpus), "--out", str(index), "--no-progress",
                        "--precision", "fp32"],
                       check=True)  # fmt: skip
    # fp32 explicitly: slicing does not depend on the precision, and the figures stay
    # comparable whatever the artifact's int8 gate says.
    base = ["--model", str(artifact), "--index", str(index), "--device", "cpu", "--read-only"]
    base += ["--precision", "fp32"]
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
