"""An index directory: HNSW graph + passage store + manifest, opened and searched as one.

Layout:
    manifest.json     written last by a build: a folder without it is an unfinished build
    passages.sqlite   passages, vectors, labels, write sequence (the source of truth)
    graph.hnsw        the hnswlib graph (a cache of the store, checked by sha256 on load)

Exact search reads the vectors back from the graph (`get_items`) in chunks rather than
keeping a second copy: no extra memory or file, and the vectors are exactly the ones HNSW
searches, so comparing the two measures the graph alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bertdot.server.index.corpus import Passage
from bertdot.server.index.damage import WHAT_TO_DO, StoreDamaged
from bertdot.server.index.exact import exact_top_k
from bertdot.server.index.graphs import VectorGraph
from bertdot.server.index.lockfile import WriterLock
from bertdot.server.index.manifest import (
    DEFAULT_EF,
    GRAPH_NAME,
    MANIFEST_NAME,
    SCHEMA_VERSION,
    STORE_NAME,
    IndexLoadError,
    IndexManifest,
    IndexMismatchError,
    check_compatible,
    write_atomic,
)
from bertdot.server.index.recovery import load_graph
from bertdot.server.index.store import PassageStore, Written

__all__ = [
    "DEFAULT_EF",
    "GRAPH_NAME",
    "MANIFEST_NAME",
    "SCHEMA_VERSION",
    "STORE_NAME",
    "Hit",
    "Index",
    "IndexLoadError",
    "IndexManifest",
    "IndexMismatchError",
    "check_compatible",
    "write_atomic",
]


# A compact graph's candidates, rescored with float32 vectors: 4 × k, at least 40 (with 40,
# recall@10 at 50,000 × 768 went from 0.90 (int8 alone) to 0.98 at ef 256, benchmarks/scale.py).
RESCORE_FACTOR = 4
RESCORE_MIN = 40


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows at unit length, as hnswlib and usearch keep them in the cosine space."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def graph_suffix(vectors: str) -> str:
    return ".hnsw" if vectors == "f32" else ".usearch"


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    title: str | None = None
    text: str | None = None


class Index:
    """Thread-safe: graph work (whose `ef` is global) runs under a lock; the store has a
    connection per thread. Writes (`upsert`, `delete`) are meant to come from one thread, the
    one searches run on in the server, so that a graph insertion never overlaps a search
    even beyond what the lock guards."""

    def __init__(
        self,
        root: Path,
        manifest: IndexManifest,
        store: PassageStore,
        graph: VectorGraph,
        lock: WriterLock | None = None,
        sequence: int | None = None,
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.store = store
        self.graph = graph
        self.writer_lock = lock
        # of the last write applied to the graph
        self.sequence = store.max_seq() if sequence is None else sequence
        self.rebuilt = False  # whether `open` rebuilt a damaged graph from the store
        self.store_check_s: float | None = None  # how long `open`'s store check took
        self._lock = threading.RLock()

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        *,
        expected_fingerprint: str | None = None,
        expected_similarity: str | None = None,
        writer: bool = False,
        read_only: bool = False,
        rebuild_graph: bool = False,
        check_store: bool = True,
    ) -> Index:
        """Open an index, refusing another model's index or a space unfit for its similarity.

        Writes in the store newer than the saved graph are replayed into it in memory.
        `writer`: take the index's exclusive writer lock (a server that accepts writes, a
        snapshot); a second writer is refused. `read_only`: open the store read-only.
        `rebuild_graph`: rebuild a missing or damaged graph file from the store (and save it,
        for a writer) instead of refusing to open. `check_store`: run SQLite's quick_check of
        the passage store first and refuse a damaged one (off: the caller checks it later,
        e.g. in the background on a very large store).
        """
        root = Path(index_dir)
        manifest = IndexManifest.read(root)
        check_compatible(manifest, root, expected_fingerprint, expected_similarity)
        if not (root / STORE_NAME).is_file():
            raise IndexLoadError(f"index {root}: the passage store {STORE_NAME} is missing")
        lock = WriterLock.acquire(root) if writer else None
        store = None
        try:
            store = PassageStore(root / STORE_NAME, read_only=read_only)
            checked_in = None
            if check_store:
                ok, found, checked_in = store.integrity()
                if not ok:
                    raise IndexLoadError(
                        f"index {root}: the passage store {STORE_NAME} is damaged (SQLite "
                        f"quick_check: {found[:200]}); {WHAT_TO_DO}"
                    )
            graph, rebuilt, through = load_graph(root, manifest, store, rebuild_graph)
            stored = store.count()
            if graph.count != stored or graph.dim != manifest.dim:
                raise IndexLoadError(
                    f"index {root}: the graph holds {graph.count} vectors of dimension "
                    f"{graph.dim} but the store {stored} of dimension {manifest.dim}: the files "
                    "do not belong together; rebuild the index"
                )
        except BaseException as exc:
            if store is not None:
                store.close()
            if lock is not None:
                lock.release()
            if isinstance(exc, StoreDamaged):  # met while replaying or counting
                raise IndexLoadError(f"index {root}: {exc.log_line()}") from exc
            raise
        index = cls(root, manifest, store, graph, lock, through)
        index.rebuilt = rebuilt
        index.store_check_s = checked_in
        if rebuilt and writer:
            index.save_graph()
        return index

    def close(self) -> None:
        self.store.close()
        if self.writer_lock is not None:
            self.writer_lock.release()

    @property
    def pending_writes(self) -> int:
        """Writes applied since the graph was last saved (replayed at the next open)."""
        return self.sequence - self.manifest.graph_seq

    def upsert(self, passages: Sequence[Passage], vectors: np.ndarray) -> int:
        """Add or replace passages: commit them durably, then update the graph (growing it
        when full). Returns the write's sequence number. A crash between the two steps is
        repaired by the replay at the next open."""
        written = self.store.upsert(passages, vectors)
        with self._lock:
            self.graph.add(vectors, np.asarray(written.labels, dtype=np.int64))
            self.sequence = max(self.sequence, written.sequence)
        return written.sequence

    def follow(self) -> int:
        """Apply the writes another process committed to the store since this graph's
        sequence: how a read-only replica keeps up with the writer. Call it from the thread
        searches run on (like the writes). Returns the sequence the graph now holds."""
        if self.store.max_seq() <= self.sequence:  # the usual poll: one indexed read
            return self.sequence
        changes = self.store.changes_since(self.sequence)  # read outside the graph lock
        with self._lock:
            self.graph.add(changes.vectors, changes.labels)
            for label in changes.deleted:
                self.graph.retire(label)
            self.sequence = max(self.sequence, changes.through)
        return self.sequence

    def delete(self, ids: Sequence[str]) -> Written:
        """Remove passages by id (unknown ids are skipped): commit, then mark their labels
        deleted in the graph; the labels are reused by later additions."""
        removed = self.store.remove(ids)
        with self._lock:
            for label in removed.labels:
                self.graph.mark_deleted(label)
            self.sequence = max(self.sequence, removed.sequence)
        return removed

    @property
    def count(self) -> int:
        return self.graph.count

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def similarity(self) -> str:
        return self.manifest.similarity

    @property
    def default_ef(self) -> int:
        return self.manifest.ef_search

    @property
    def params(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "space": m.space,
            "similarity": m.similarity,
            "dim": m.dim,
            "count": self.count,
            "M": m.M,
            "ef_construction": m.ef_construction,
            "ef_search": m.ef_search,
        }

    def search(
        self, query_vectors: np.ndarray, k: int, ef: int | None = None, with_text: bool = True
    ) -> list[list[Hit]]:
        """Approximate top-`k` per query; scores are the model's similarity (dot product)."""
        labels, scores, sequence = self._search(query_vectors, k, ef)
        return self._hits(labels, scores, sequence, with_text)

    def search_labels(
        self, query_vectors: np.ndarray, k: int, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        labels, scores, _ = self._search(query_vectors, k, ef)
        return labels, scores

    def _search(
        self, query_vectors: np.ndarray, k: int, ef: int | None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        queries = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
        ef = ef or self.default_ef
        with self._lock:
            sequence = self.sequence  # the writes the searched graph holds
            if not self.graph.compact:
                labels, scores = self.graph.search(queries, k, ef)
                return labels, scores, sequence
            fetch = max(k * RESCORE_FACTOR, RESCORE_MIN)
            labels, _ = self.graph.search(queries, fetch, max(ef, fetch))
            stored = self.store.vectors_for_labels(np.unique(labels[labels >= 0]).tolist())
        return (*self._rescored(queries, labels, stored, k), sequence)

    def _rescored(
        self, queries: np.ndarray, labels: np.ndarray, stored: dict[int, np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """A compact graph's candidates ranked by the store's float32 vectors: exact scores
        (normalised like the graph's space), the best `k` of them."""
        out_labels = np.full((len(queries), k), -1, dtype=np.int64)
        out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
        for row, (query, candidates) in enumerate(zip(queries, labels, strict=True)):
            known = [int(n) for n in candidates if int(n) in stored]
            if not known:
                continue
            vectors = np.stack([stored[n] for n in known])
            if self.graph.space == "cosine":
                vectors = vectors / np.maximum(
                    np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12
                )
                query = query / max(float(np.linalg.norm(query)), 1e-12)
            scores = vectors @ query
            best = np.argsort(-scores, kind="stable")[:k]
            out_labels[row, : len(best)] = np.asarray(known)[best]
            out_scores[row, : len(best)] = scores[best]
        return out_labels, out_scores

    def exact_search(
        self, query_vectors: np.ndarray, k: int, with_text: bool = True
    ) -> list[list[Hit]]:
        """Brute force over every vector: for validation and small corpora."""
        sequence = self.sequence
        labels, scores = self.exact_labels(query_vectors, k)
        return self._hits(labels, scores, sequence, with_text)

    def exact_labels(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        def vectors_of(chunk: np.ndarray) -> np.ndarray:
            with self._lock:  # per chunk: searches go on between chunks
                return self._vectors_by_label(chunk)

        return exact_top_k(query_vectors, k, self.store.labels(), vectors_of, self.graph.space)

    def get_passages(self, ids: Sequence[str]) -> dict[str, Passage]:
        """The passages among `ids` that the index holds."""
        return self.store.get_by_ids(ids)

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        """Stored vectors in the order of `ids`; KeyError names unknown ids."""
        found = self.store.labels_for_ids(ids)
        missing = [i for i in ids if i not in found]
        if missing:
            raise KeyError(f"{len(missing)} passage id(s) not in the index: {missing[:5]}")
        with self._lock:
            return self._vectors_by_label(np.array([found[i] for i in ids], dtype=np.int64))

    def _vectors_by_label(self, labels: np.ndarray) -> np.ndarray:
        """Exact vectors: the graph's own (float32 in hnswlib, normalised for cosine), or the
        store's float32 ones where the graph keeps compact approximations."""
        if not self.graph.compact:
            return self.graph.get_vectors(labels)
        stored = self.store.vectors_for_labels(labels.tolist())
        vectors = np.stack([stored[int(n)] for n in labels]) if len(labels) else None
        if vectors is None:
            return np.zeros((0, self.dim), dtype=np.float32)
        return (_unit(vectors) if self.graph.space == "cosine" else vectors).astype(np.float32)

    def set_default_ef(self, ef: int) -> None:
        """Record `ef` as the search default in the manifest (e.g. what `index check` found)."""
        if ef < 1:
            raise ValueError(f"ef must be at least 1, got {ef}")
        self.manifest = replace(self.manifest, ef_search=ef)
        self.manifest.write(self.root)

    def save_graph(self) -> None:
        """Checkpoint the in-memory graph (replayed writes included) so the next open replays
        less. The graph goes to a new file (never over the one the manifest names) and the
        manifest is switched to it atomically: a crash leaves the old manifest and graph
        intact, at worst an orphan file behind, which the next snapshot removes."""
        with self._lock:
            seq = self.sequence  # exactly the writes this graph holds
            old = self.manifest.graph_file
            suffix = graph_suffix(self.manifest.vectors)
            name = f"graph.{seq}{suffix}"
            if name == old:  # a rebuilt graph at an unchanged sequence
                name = f"graph.{seq}.{time.time_ns()}{suffix}"
            sha256 = self.graph.save(self.root / name)
            self.manifest = replace(
                self.manifest, graph_file=name, graph_sha256=sha256, graph_seq=seq,
                count=self.graph.count,
            )  # fmt: skip
            self.manifest.write(self.root)
            for stale in [*self.root.glob("graph*.hnsw*"), *self.root.glob("graph*.usearch*")]:
                if stale.name != name:
                    stale.unlink(missing_ok=True)

    def _hits(
        self, labels: np.ndarray, scores: np.ndarray, sequence: int, with_text: bool
    ) -> list[list[Hit]]:
        """Labels → passages in one store query. The store may be ahead of the graph that
        was searched, whose writes end at `sequence`: a write since then (by this process
        between its commit and its graph update, or by the writer a replica follows) may
        have given a label to another passage, which the graph does not yet hold the
        vector of. Only passages written up to `sequence` are answered; labels deleted
        meanwhile are dropped too."""
        wanted = np.unique(labels).tolist()
        found: dict[int, tuple[str, str | None, str | None]]
        if with_text:
            stored = self.store.get_by_labels(wanted, sequence)
            found = {n: (p.id, p.title, p.text) for n, p in stored.items()}
        else:
            headers = self.store.headers_for_labels(wanted, sequence)
            found = {n: (pid, title, None) for n, (pid, title) in headers.items()}
        return [
            [
                Hit(found[n][0], s, found[n][1], found[n][2])
                for n, s in zip(row_labels.tolist(), row_scores.tolist(), strict=True)
                if n in found
            ]
            for row_labels, row_scores in zip(labels, scores, strict=True)
        ]
