"""Compact vectors: an HNSW graph that stores float16 or int8 vectors (usearch).

hnswlib keeps every vector as float32 inside its graph: at 768 dimensions that is 3 KiB a
passage, 27 GB for MS MARCO, and the store holds the float32 vectors again. usearch stores
them as float16 (half the graph's vector memory) or int8 (a quarter), with the same HNSW
search. What the compact copy costs in precision is paid back by rescoring: the index asks
this graph for more candidates than it answers and ranks them by the float32 vectors of the
store (`Index.search`), so the scores a caller sees are exact and recall@10 against exact
search stays where the benchmark measured it (benchmarks/scale.py).

usearch's int8 quantises each vector after scaling it to unit length, so an int8 graph
chooses candidates by angle; for a cosine model that is its own ranking, for a dot-product
model (BERT_Dot) the rescoring by dot product decides: measure recall with
`bertdot index check` before serving one.

The same interface as `HnswGraph`; labels are usearch keys. A removed key is gone from the
graph (no tombstones), so `retire` and `assume_deleted` have nothing to keep in step.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from usearch.index import Index

from bertdot.server.cores import usable_cores
from bertdot.server.index.exact import exact_top_k
from bertdot.server.index.graph import (
    EXACT_FALLBACK_MAX,
    GraphFileError,
    save_atomically,
    verify_file,
)

KINDS = {"f16": "f16", "i8": "i8"}
METRICS = {"ip": "ip", "cosine": "cos"}


class UsearchGraph:
    compact = True

    def __init__(self, index: Index, space: str, vectors: str) -> None:
        self._index = index
        self.space = space
        self.vectors = vectors
        self._threads = usable_cores()

    @classmethod
    def create(
        cls,
        space: str,
        dim: int,
        capacity: int,
        *,
        M: int = 16,
        ef_construction: int = 200,
        vectors: str = "f16",
    ) -> UsearchGraph:
        # No capacity to reserve: usearch grows its graph as vectors arrive.
        index = Index(
            ndim=dim, metric=METRICS[space], dtype=KINDS[vectors], connectivity=M,
            expansion_add=ef_construction,
        )  # fmt: skip
        return cls(index, space, vectors)

    @classmethod
    def load(
        cls,
        path: str | Path,
        space: str,
        dim: int,
        expected_sha256: str,
        deleted: Iterable[int] = (),
        vectors: str = "f16",
    ) -> UsearchGraph:
        path = Path(path)
        verify_file(path, expected_sha256)
        try:
            index = Index.restore(str(path))
        except (RuntimeError, ValueError) as exc:
            raise GraphFileError(f"graph file {path} cannot be loaded: {exc}") from exc
        if index is None or int(index.ndim) != dim:
            raise GraphFileError(f"graph file {path} is not a usearch graph of dimension {dim}")
        return cls(index, space, vectors)

    @property
    def dim(self) -> int:
        return int(self._index.ndim)

    @property
    def count(self) -> int:
        return int(self._index.size)

    @property
    def capacity(self) -> int:
        return int(self._index.capacity)

    @property
    def M(self) -> int:
        return int(self._index.connectivity)

    @property
    def ef_construction(self) -> int:
        return int(self._index.expansion_add)

    def set_num_threads(self, threads: int) -> None:
        self._threads = threads if threads > 0 else usable_cores()

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Add (or overwrite, for an existing label) vectors; usearch grows as needed."""
        labels = np.asarray(labels, dtype=np.uint64)
        if len(labels) == 0:
            return
        present = np.asarray(self._index.contains(labels), dtype=bool).reshape(-1)
        if present.any():
            self._index.remove(labels[present])
        self._index.add(labels, np.asarray(vectors, dtype=np.float32), threads=self._threads)

    def mark_deleted(self, label: int) -> None:
        """Idempotent: removing a label the graph does not hold is not an error."""
        self._index.remove(int(label))

    def retire(self, label: int) -> None:
        self.mark_deleted(label)

    def assume_deleted(self, labels: Iterable[int]) -> None:
        """Nothing to do: removed keys are gone from a usearch graph."""

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        """The compact vectors, widened to float32 (approximate: exact ones are the store's)."""
        if len(labels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        got = self._index.get(np.asarray(labels, dtype=np.uint64), dtype="f32")
        return np.asarray(got, dtype=np.float32).reshape(len(labels), self.dim)

    def search(self, vectors: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` candidate labels per query (-1 where fewer are found) and the compact
        vectors' scores; `Index.search` rescoring them is what callers get."""
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        k = min(k, self.count)
        if k <= 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        self._index.expansion_search = max(ef, k)  # type: ignore[misc]  # has a setter
        found = self._index.search(queries, k, threads=self._threads if len(queries) > 1 else 1)
        # One query answers a flat Matches (as many columns as it found), several a
        # BatchMatches (k columns and a count per row).
        raw_keys = np.atleast_2d(np.asarray(found.keys, dtype=np.int64))
        raw_distances = np.atleast_2d(np.asarray(found.distances, dtype=np.float32))
        width = min(raw_keys.shape[1], k)
        keys = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        keys[:, :width] = raw_keys[:, :width]
        scores[:, :width] = 1.0 - raw_distances[:, :width]
        counts = np.asarray(getattr(found, "counts", [width]), dtype=np.int64).reshape(-1)
        short = counts < k
        if short.any() and self.count <= EXACT_FALLBACK_MAX:
            # As for hnswlib (`HnswGraph._beyond_reach`): a vector nobody's neighbour is
            # unreachable; a small graph answers such a query by brute force.
            keys[short], scores[short] = self._exact(queries[short], k)
            counts[short] = k
        for row, count in enumerate(counts.tolist()):
            keys[row, count:] = -1
            scores[row, count:] = -np.inf
        return keys, scores

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        live = np.asarray(self._index.keys, dtype=np.int64)
        return exact_top_k(queries, k, live, self.get_vectors, self.space)

    def save(self, path: str | Path) -> str:
        """Write atomically (temp file, fsync, rename, fsync the folder); returns the sha256."""
        return save_atomically(Path(path), self._index.save)
