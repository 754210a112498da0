"""`bertdot index check`: recall@k of HNSW against exact search, and latency, per `ef`.

Recall depends on the vectors: real encoder vectors need a far larger `ef` than toy data
suggests, so the index measures itself and recommends the smallest `ef` reaching the target.
Queries, best first: real queries from a file; the texts of sampled passages, encoded (the
passage finds itself, the other k − 1 neighbours still test the graph); without an encoder,
sampled stored vectors with a little Gaussian noise.

Recall counts ties as hits (as ann-benchmarks does): a result scoring at least the k-th exact
score is a true neighbour, whichever of several equal-scoring passages exact search happened
to list. Without this, duplicate passages (MS MARCO has many) make recall look poor at any ef.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bertdot.server.index.index import Index
from bertdot.server.indexing.protocols import TextEncoder

DEFAULT_EFS = (16, 32, 64, 128, 256, 512)
TARGET_RECALL = 0.99
# Relative slack for "at least the k-th exact score": hnswlib and numpy sum in different
# orders (measured differences ~5e-7 relative); far below real gaps between neighbours.
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class CheckReport:
    k: int
    queries: int
    query_source: str
    recall: dict[int, float]
    p50_ms: dict[int, float]
    exact_ms_per_query: float
    target: float
    recommended_ef: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            f"recall@{self.k}": {str(ef): r for ef, r in self.recall.items()},
            "p50_ms": {str(ef): ms for ef, ms in self.p50_ms.items()},
            "recommended_ef": self.recommended_ef,
            "target_recall": self.target,
            "queries": self.queries,
            "query_source": self.query_source,
            "exact_ms_per_query": self.exact_ms_per_query,
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    def table(self) -> str:
        lines = [f"{'ef':>6}  {f'recall@{self.k}':>10}  {'p50 ms':>8}"]
        for ef in self.recall:
            lines.append(f"{ef:>6}  {self.recall[ef]:>10.4f}  {self.p50_ms[ef]:>8.3f}")
        lines.append(f"exact search: {self.exact_ms_per_query:.3f} ms per query")
        if self.recommended_ef is None:
            lines.append(f"no ef reached recall {self.target}: try larger ef values or a larger M")
        else:
            lines.append(
                f"recommended ef: {self.recommended_ef} (smallest with recall ≥ {self.target})"
            )
        return "\n".join(lines)


def sample_queries(
    index: Index,
    *,
    encoder: TextEncoder | None = None,
    query_texts: Sequence[str] | None = None,
    samples: int = 200,
    noise: float = 0.05,
    seed: int = 0,
) -> tuple[np.ndarray, str]:
    """Query vectors and a description of where they came from (see the module notes)."""
    if query_texts is not None:
        if encoder is None:
            raise ValueError("query texts need an encoder")
        return encoder.encode(list(query_texts)).vectors, f"{len(query_texts)} queries from file"
    rng = np.random.default_rng(seed)
    labels = index.store.labels()
    chosen = np.sort(rng.choice(labels, size=min(samples, len(labels)), replace=False))
    if encoder is not None:
        passages = index.store.get_by_labels(chosen.tolist())
        texts = [passages[int(label)].encoder_input() for label in chosen]
        return encoder.encode(texts).vectors, f"{len(texts)} sampled passages, encoded"
    vectors = index.graph.get_vectors(chosen)
    scale = noise * float(np.linalg.norm(vectors, axis=1).mean()) / np.sqrt(index.dim)
    noisy = vectors + rng.normal(0.0, scale, vectors.shape).astype(np.float32)
    return noisy, f"{len(chosen)} sampled stored vectors with {noise:.0%} noise"


def check_index(
    index: Index,
    query_vectors: np.ndarray,
    *,
    efs: Sequence[int] = DEFAULT_EFS,
    k: int = 10,
    target: float = TARGET_RECALL,
    source: str = "",
) -> CheckReport:
    """Recall@k and median single-query latency of HNSW for each ef, against exact search."""
    queries = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
    if len(queries) == 0:
        raise ValueError("no queries to check with")
    started = time.perf_counter()
    _, exact_scores = index.exact_labels(queries, k)
    exact_ms = (time.perf_counter() - started) * 1000 / len(queries)
    wanted = exact_scores.shape[1]
    if wanted == 0:
        raise ValueError("the index is empty")
    kth = exact_scores[:, -1]
    threshold = kth - TIE_TOLERANCE * np.maximum(1.0, np.abs(kth))
    recall: dict[int, float] = {}
    p50: dict[int, float] = {}
    for ef in sorted(set(efs)):
        index.search_labels(queries[:1], k, ef)  # warm up
        hits, times = [], []
        for query, floor in zip(queries, threshold, strict=True):
            t0 = time.perf_counter()
            _, scores = index.search_labels(query[None, :], k, ef)
            times.append(time.perf_counter() - t0)
            hits.append(int((scores[0] >= floor).sum()))
        recall[ef] = float(np.mean(hits)) / wanted
        p50[ef] = float(np.median(times)) * 1000
    recommended = next((ef for ef in recall if recall[ef] >= target), None)
    return CheckReport(
        k=k,
        queries=len(queries),
        query_source=source,
        recall=recall,
        p50_ms=p50,
        exact_ms_per_query=exact_ms,
        target=target,
        recommended_ef=recommended,
    )


def read_queries(path: str | Path) -> list[str]:
    """One query per line; blank lines are skipped."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    queries = [q.strip() for q in lines if q.strip()]
    if not queries:
        raise ValueError(f"query file {path} holds no queries")
    return queries
