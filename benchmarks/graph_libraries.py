"""HNSW libraries side by side on the scale benchmark's vectors: which one should hold the graph?

    python benchmarks/graph_libraries.py                     # 250,000 × 768 (~20 minutes)
    python benchmarks/graph_libraries.py --passages 1000000 --m 32
    pip install faiss-cpu                                    # optional: adds faiss's HNSW

Contenders, all built in this one process from the same vectors (those of
`benchmarks/scale.py`: the calibrated generator of `benchmarks/index.py`, 768 dimensions,
real encoded queries) with the same M and ef_construction: hnswlib float32 (what bertdot's
default index holds), usearch float32, float16 and int8 (what `--vectors f16|i8` holds) and,
where `faiss` is importable, faiss's HNSW over float32 and over its fp16 and 8-bit scalar
quantisers. faiss is not a bertdot dependency: its HNSW cannot remove a vector, which the
index's deletes and updates need.

Per contender: build time on all cores, the graph's serialised size per passage, and per ef
recall@10 against exact search (ties count as hits) and the p50 of one query per call on one
thread. The compact ones fetch 4 × k (at least 40) candidates and rank them by the float32
vectors, as bertdot's compact index does with its store's vectors (here they are in memory,
so the store's lookup is not in these times; `benchmarks/scale.py` times the whole search).
Search rounds alternate the contenders in rotating order; p50s are medians over all rounds.
Writes `graph-libraries-<passages>.json` and `.md` under `--out`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_info, markdown_table, usable_cores, write_report
from encoder import DEFAULT_CACHE
from index import _unit, exact_top, lift, real_vectors, synthesize, tie_floor
from scale import DIM, NOISE

from bertdot.server.index.index import RESCORE_FACTOR, RESCORE_MIN
from server import git_commit

K = 10
FETCH = max(K * RESCORE_FACTOR, RESCORE_MIN)  # the candidates bertdot's compact index rescores
EFS = [64, 128, 256, 512, 1024]
TARGET = 0.99
Search = Callable[[np.ndarray, int, int], np.ndarray]  # (query, count, ef) -> labels


@dataclass
class Contender:
    name: str
    compact: bool
    build_s: float
    bytes_per_passage: int
    search: Search


def _size_of(save: Callable[[str], object]) -> int:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "graph"
        save(str(path))
        return path.stat().st_size


def _hnswlib(vectors: np.ndarray, labels: np.ndarray, m: int, efc: int, threads: int) -> Any:
    """An hnswlib graph of `vectors[labels]` under those labels."""
    import hnswlib

    graph = hnswlib.Index(space="ip", dim=vectors.shape[1])
    graph.init_index(len(labels), M=m, ef_construction=efc)
    graph.set_num_threads(threads)
    graph.add_items(vectors[labels], labels)
    return graph


def hnswlib_f32(vectors: np.ndarray, m: int, efc: int, threads: int) -> Contender:
    started = time.perf_counter()
    graph = _hnswlib(vectors, np.arange(len(vectors)), m, efc, threads)
    build_s = time.perf_counter() - started

    def search(query: np.ndarray, count: int, ef: int) -> np.ndarray:
        graph.set_ef(max(ef, count))
        return graph.knn_query(query, count, num_threads=1)[0][0].astype(np.int64)

    size = _size_of(graph.save_index)
    return Contender("hnswlib f32", False, build_s, size // len(vectors), search)


def hnswlib_shards(vectors: np.ndarray, m: int, efc: int, threads: int) -> Contender:
    """The vectors split in two hnswlib graphs, one query searched in both at once (one thread
    each: hnswlib lets go of the GIL while it searches) and the answers merged by score."""
    started = time.perf_counter()
    halves = np.array_split(np.arange(len(vectors)), 2)
    graphs = [_hnswlib(vectors, labels, m, efc, threads) for labels in halves]
    build_s = time.perf_counter() - started
    pool = ThreadPoolExecutor(max_workers=len(graphs))

    def one(graph: Any, query: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        labels, distances = graph.knn_query(query, count, num_threads=1)
        return labels[0].astype(np.int64), distances[0]

    def search(query: np.ndarray, count: int, ef: int) -> np.ndarray:
        for graph in graphs:
            graph.set_ef(max(ef, count))
        answers = list(pool.map(lambda graph: one(graph, query, count), graphs))
        labels = np.concatenate([labels for labels, _ in answers])
        distances = np.concatenate([distances for _, distances in answers])
        return labels[np.argsort(distances, kind="stable")[:count]]  # ip distance = 1 - score

    size = sum(_size_of(graph.save_index) for graph in graphs)
    return Contender("hnswlib f32 2 shards", False, build_s, size // len(vectors), search)


def usearch_graph(vectors: np.ndarray, m: int, efc: int, threads: int, dtype: str) -> Contender:
    from usearch.index import Index

    started = time.perf_counter()
    graph = Index(
        ndim=vectors.shape[1], metric="ip", dtype=dtype, connectivity=m, expansion_add=efc
    )
    graph.add(np.arange(len(vectors), dtype=np.uint64), vectors, threads=threads)
    build_s = time.perf_counter() - started

    def search(query: np.ndarray, count: int, ef: int) -> np.ndarray:
        graph.expansion_search = max(ef, count)  # type: ignore[misc]  # has a setter
        return np.asarray(graph.search(query, count, threads=1).keys, dtype=np.int64)

    size = _size_of(graph.save)
    return Contender(f"usearch {dtype}", dtype != "f32", build_s, size // len(vectors), search)


def faiss_graph(vectors: np.ndarray, m: int, efc: int, threads: int, kind: str) -> Contender:
    import faiss  # type: ignore[import-not-found]

    faiss.omp_set_num_threads(threads)
    started = time.perf_counter()
    dim = vectors.shape[1]
    if kind == "f32":
        graph = faiss.IndexHNSWFlat(dim, m, faiss.METRIC_INNER_PRODUCT)
    else:
        quantiser = {"f16": faiss.ScalarQuantizer.QT_fp16, "sq8": faiss.ScalarQuantizer.QT_8bit}
        graph = faiss.IndexHNSWSQ(dim, quantiser[kind], m, faiss.METRIC_INNER_PRODUCT)
        graph.train(vectors[:: max(len(vectors) // 100_000, 1)])
    graph.hnsw.efConstruction = efc
    graph.add(vectors)
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)  # one query per call, on one thread, as the others

    def search(query: np.ndarray, count: int, ef: int) -> np.ndarray:
        graph.hnsw.efSearch = max(ef, count)
        return graph.search(query[None, :], count)[1][0].astype(np.int64)

    size = _size_of(lambda path: faiss.write_index(graph, path))
    return Contender(f"faiss {kind}", kind != "f32", build_s, size // len(vectors), search)


Builder = Callable[[np.ndarray, int, int, int], Contender]  # (vectors, m, efc, threads)
BUILDERS: dict[str, Builder] = {
    "hnswlib f32": hnswlib_f32,
    "hnswlib f32 2 shards": hnswlib_shards,
    **{f"usearch {dtype}": partial(usearch_graph, dtype=dtype) for dtype in ("f32", "f16", "i8")},
    **{f"faiss {kind}": partial(faiss_graph, kind=kind) for kind in ("f32", "f16", "sq8")},
}


def faiss_installed() -> bool:
    try:
        import faiss  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        return False
    return True


def contenders(args: argparse.Namespace, vectors: np.ndarray) -> list[Contender]:
    threads = usable_cores()
    names = [name for name in BUILDERS if not args.only or name in args.only]
    if not faiss_installed():
        print("faiss not installed: its contenders are skipped (pip install faiss-cpu)")
        names = [name for name in names if not name.startswith("faiss")]
    built = []
    for name in names:
        print(f"building {name} ...", flush=True)
        contender = BUILDERS[name](vectors, args.m, args.ef_construction, threads)
        print(f"  {contender.build_s:.1f} s, {contender.bytes_per_passage} B per passage")
        built.append(contender)
    return built


def answer(contender: Contender, vectors: np.ndarray, query: np.ndarray, ef: int) -> np.ndarray:
    """Top-k labels as bertdot would answer them (compact: rescored by float32 vectors)."""
    if not contender.compact:
        return contender.search(query, K, ef)
    labels = contender.search(query, FETCH, max(ef, FETCH))
    labels = labels[labels >= 0]
    return labels[np.argsort(-(vectors[labels] @ query), kind="stable")[:K]]


def sweep(
    built: list[Contender],
    vectors: np.ndarray,
    queries: np.ndarray,
    efs: Sequence[int],
    rounds: int,
) -> dict[str, dict[int, dict[str, float]]]:
    floor = tie_floor(exact_top(vectors, queries, K)[1])
    times: dict[tuple[str, int], list[float]] = {(c.name, ef): [] for c in built for ef in efs}
    recall: dict[tuple[str, int], float] = {}
    for number in range(rounds):
        order = built[number % len(built) :] + built[: number % len(built)]
        for contender in order:
            for ef in efs:
                answer(contender, vectors, queries[0], ef)  # warm
                hits = []
                for i, query in enumerate(queries):
                    started = time.perf_counter()
                    labels = answer(contender, vectors, query, ef)
                    times[contender.name, ef].append(time.perf_counter() - started)
                    hits.append(int((vectors[labels] @ query >= floor[i]).sum()))
                recall[contender.name, ef] = float(np.mean(hits)) / K
        print(f"round {number + 1} of {rounds} done", flush=True)
    return {
        c.name: {
            ef: {
                "recall": round(recall[c.name, ef], 4),
                "p50_ms": round(float(np.median(times[c.name, ef])) * 1000, 3),
            }
            for ef in efs
        }
        for c in built
    }


def render(data: dict[str, Any]) -> str:
    lines = [
        f"# HNSW libraries on {data['passages']:,} passages × {DIM}",
        "",
        f"`{data['command']}` at commit {data['commit']}; {data['machine']['cpu']}, "
        f"{data['machine']['cores']} cores; M={data['m']}, ef_construction="
        f"{data['ef_construction']}; versions {data['machine']['versions']}; "
        f"{data['rounds']} search rounds, {data['queries']} queries each.",
        "",
        f"Compact contenders fetch {FETCH} candidates and rank them by float32 vectors held in "
        'memory (no store lookup in these times). "2 shards" splits the passages in two '
        "graphs searched at once, one thread each, answers merged by score.",
        "",
    ]
    efs = data["efs"]
    rows = []
    for name, result in data["contenders"].items():
        by_ef = data["search"][name]
        reaching = [ef for ef in efs if by_ef[str(ef)]["recall"] >= TARGET]
        rows.append(
            [
                name,
                f"{result['build_s']:.0f} s",
                result["bytes_per_passage"],
                *(
                    f"{by_ef[str(ef)]['recall']:.3f} · {by_ef[str(ef)]['p50_ms']:.2f} ms"
                    for ef in efs
                ),
                reaching[0] if reaching else "–",
            ]
        )
    lines.append(
        markdown_table(
            [
                "graph",
                "build",
                "B per passage",
                *(f"ef {ef}: recall · p50" for ef in efs),
                f"first ef ≥ {TARGET}",
            ],
            rows,
        )
    )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=250_000)
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=200)
    parser.add_argument("--efs", type=lambda s: [int(x) for x in s.split(",")], default=EFS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=None,
        help="comma-separated contender names, e.g. 'hnswlib f32,usearch i8'",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.only or ()) - set(BUILDERS))
    if unknown:
        parser.error(f"--only: unknown {unknown}; the contenders are {', '.join(BUILDERS)}")
    if args.only and all(name.startswith("faiss") for name in args.only) and not faiss_installed():
        parser.error("--only names faiss contenders only, and faiss is not installed")
    if args.passages < 1000 or args.m < 2 or args.rounds < 1 or min(args.efs) < 1:
        parser.error("--passages ≥ 1000, --m ≥ 2, --rounds ≥ 1 and every ef ≥ 1")
    data: dict[str, Any] = {
        "command": "python benchmarks/graph_libraries.py " + " ".join(argv or sys.argv[1:]),
        "commit": git_commit(),
        "machine": machine_info(["hnswlib", "usearch", "faiss-cpu", "numpy"]),
        "passages": args.passages,
        "m": args.m,
        "ef_construction": args.ef_construction,
        "efs": args.efs,
        "rounds": args.rounds,
    }
    real = real_vectors(args.cache, False)
    vectors = synthesize(_unit(lift(real.pool, DIM)), args.passages, NOISE)
    queries = _unit(lift(real.queries, DIM))
    data["queries"] = len(queries)
    built = contenders(args, vectors)
    data["contenders"] = {
        c.name: {"build_s": round(c.build_s, 1), "bytes_per_passage": c.bytes_per_passage}
        for c in built
    }
    search = sweep(built, vectors, queries, args.efs, args.rounds)
    data["search"] = {
        name: {str(ef): row for ef, row in rows.items()} for name, rows in search.items()
    }
    data["machine"]["load_average_end"] = load_average()
    for path in write_report(args.out, f"graph-libraries-{args.passages}", data, render(data)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
