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

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bertdot.server.corpus import Passage
from bertdot.server.hnsw import GraphFileError, HnswGraph, fsync_dir, space_for
from bertdot.server.store import PassageStore

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
STORE_NAME = "passages.sqlite"
GRAPH_NAME = "graph.hnsw"
DEFAULT_EF = 128
_EXACT_CHUNK = 16384


class IndexLoadError(Exception):
    """An index directory cannot be opened (missing, unfinished, corrupt)."""


class IndexMismatchError(IndexLoadError):
    """The index was built by another model, or its space does not fit the similarity."""


@dataclass(frozen=True)
class IndexManifest:
    fingerprint: str
    similarity: str
    space: str
    dim: int
    count: int
    M: int
    ef_construction: int
    ef_search: int
    graph_file: str
    graph_sha256: str
    graph_seq: int  # the store's write sequence the graph contains; later writes replay
    created_at: str
    corpus: str | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, index_dir: str | Path) -> IndexManifest:
        root = Path(index_dir)
        path = root / MANIFEST_NAME
        if not path.is_file():
            if (root / STORE_NAME).is_file():
                raise IndexLoadError(
                    f"{root} is an unfinished build (no {MANIFEST_NAME}); finish it with "
                    "`bertdot index build ... --resume`"
                )
            raise IndexLoadError(f"{root} is not a bertdot index: {MANIFEST_NAME} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("schema_version") != SCHEMA_VERSION:
                raise IndexLoadError(
                    f"{path}: schema_version {data.get('schema_version')!r} is not supported "
                    f"(expected {SCHEMA_VERSION})"
                )
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise IndexLoadError(f"{path} is not a valid index manifest: {exc}") from exc

    def write(self, index_dir: str | Path) -> None:
        text = json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"
        write_atomic(Path(index_dir) / MANIFEST_NAME, text)


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    score: float
    title: str | None = None
    text: str | None = None


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class Index:
    """Thread-safe: graph work (whose `ef` is global) runs under a lock; the store has a
    connection per thread."""

    def __init__(
        self, root: Path, manifest: IndexManifest, store: PassageStore, graph: HnswGraph
    ) -> None:
        self.root = root
        self.manifest = manifest
        self.store = store
        self.graph = graph
        self._lock = threading.RLock()

    @classmethod
    def open(
        cls,
        index_dir: str | Path,
        *,
        expected_fingerprint: str | None = None,
        expected_similarity: str | None = None,
    ) -> Index:
        """Open an index, refusing another model's index or a space unfit for its similarity.

        Writes in the store newer than the saved graph are replayed into it in memory.
        """
        root = Path(index_dir)
        manifest = IndexManifest.read(root)
        check_compatible(manifest, root, expected_fingerprint, expected_similarity)
        if not (root / STORE_NAME).is_file():
            raise IndexLoadError(f"index {root}: the passage store {STORE_NAME} is missing")
        store = PassageStore(root / STORE_NAME)
        try:
            graph = HnswGraph.load(
                root / manifest.graph_file, manifest.space, manifest.dim, manifest.graph_sha256
            )
        except GraphFileError as exc:
            store.close()
            raise IndexLoadError(str(exc)) from exc
        changes = store.changes_since(manifest.graph_seq)
        graph.add(changes.vectors, changes.labels)
        for label in changes.deleted:
            graph.mark_deleted(label)
        graph.assume_deleted(store.free_labels())
        stored = store.count()
        if graph.count != stored or graph.dim != manifest.dim:
            store.close()
            raise IndexLoadError(
                f"index {root}: the graph holds {graph.count} vectors of dimension {graph.dim} "
                f"but the store {stored} of dimension {manifest.dim}: the files do not belong "
                "together; rebuild the index"
            )
        return cls(root, manifest, store, graph)

    def close(self) -> None:
        self.store.close()

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
        labels, scores = self.search_labels(query_vectors, k, ef)
        return self._hits(labels, scores, with_text)

    def search_labels(
        self, query_vectors: np.ndarray, k: int, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self.graph.search(query_vectors, k, ef or self.default_ef)

    def exact_search(
        self, query_vectors: np.ndarray, k: int, with_text: bool = True
    ) -> list[list[Hit]]:
        """Brute force over every vector: for validation and small corpora."""
        labels, scores = self.exact_labels(query_vectors, k)
        return self._hits(labels, scores, with_text)

    def exact_labels(self, query_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.atleast_2d(np.asarray(query_vectors, dtype=np.float32))
        if self.graph.space == "cosine":  # hnswlib normalises queries for this space too
            queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
        best_labels = np.zeros((len(queries), 0), dtype=np.int64)
        best_scores = np.zeros((len(queries), 0), dtype=np.float32)
        all_labels = self.store.labels()
        for start in range(0, len(all_labels), _EXACT_CHUNK):
            chunk = all_labels[start : start + _EXACT_CHUNK]
            with self._lock:
                vectors = self.graph.get_vectors(chunk)
            scores = np.concatenate([best_scores, queries @ vectors.T], axis=1)
            tiled = np.broadcast_to(chunk, (len(queries), len(chunk)))
            labels = np.concatenate([best_labels, tiled], axis=1)
            top = _top_k(scores, k)
            best_scores = np.take_along_axis(scores, top, axis=1)
            best_labels = np.take_along_axis(labels, top, axis=1)
        return best_labels, best_scores

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
            return self.graph.get_vectors(np.array([found[i] for i in ids], dtype=np.int64))

    def set_default_ef(self, ef: int) -> None:
        """Record `ef` as the search default in the manifest (e.g. what `index check` found)."""
        if ef < 1:
            raise ValueError(f"ef must be at least 1, got {ef}")
        self.manifest = replace(self.manifest, ef_search=ef)
        self.manifest.write(self.root)

    def save_graph(self) -> None:
        """Checkpoint the in-memory graph (replayed writes included) so the next open replays
        less. The graph goes to a new file and the manifest is switched to it atomically: a
        crash leaves the old manifest and graph intact, at worst an orphan file behind."""
        with self._lock:
            seq = self.store.max_seq()  # replay is idempotent: later writes may be in it too
            name = f"graph.{seq}.hnsw"
            sha256 = self.graph.save(self.root / name)
            old = self.manifest.graph_file
            self.manifest = replace(
                self.manifest, graph_file=name, graph_sha256=sha256, graph_seq=seq,
                count=self.graph.count,
            )  # fmt: skip
            self.manifest.write(self.root)
            if old != name:
                (self.root / old).unlink(missing_ok=True)

    def _hits(self, labels: np.ndarray, scores: np.ndarray, with_text: bool) -> list[list[Hit]]:
        """Labels → passages in one store query (labels deleted meanwhile are dropped)."""
        wanted = np.unique(labels).tolist()
        found: dict[int, tuple[str, str | None, str | None]]
        if with_text:
            found = {
                n: (p.id, p.title, p.text) for n, p in self.store.get_by_labels(wanted).items()
            }
        else:
            found = {
                n: (pid, title, None)
                for n, (pid, title) in self.store.headers_for_labels(wanted).items()
            }
        return [
            [
                Hit(found[n][0], s, found[n][1], found[n][2])
                for n, s in zip(row_labels.tolist(), row_scores.tolist(), strict=True)
                if n in found
            ]
            for row_labels, row_scores in zip(labels, scores, strict=True)
        ]


def check_compatible(
    manifest: IndexManifest,
    root: Path,
    expected_fingerprint: str | None,
    expected_similarity: str | None,
) -> None:
    try:
        space = space_for(manifest.similarity)
    except ValueError as exc:
        raise IndexMismatchError(f"index {root}: {exc}") from exc
    if manifest.space != space:
        raise IndexMismatchError(
            f"index {root} uses hnswlib space {manifest.space!r}, but its model's similarity "
            f"{manifest.similarity!r} needs {space!r}; rebuild the index"
        )
    if expected_similarity is not None and expected_similarity != manifest.similarity:
        raise IndexMismatchError(
            f"index {root} was built for {manifest.similarity!r} similarity, but the model "
            f"uses {expected_similarity!r}; rebuild the index with this model"
        )
    if expected_fingerprint is not None and expected_fingerprint != manifest.fingerprint:
        raise IndexMismatchError(
            f"index {root} was built with another model (artifact fingerprint "
            f"{manifest.fingerprint}, this model is {expected_fingerprint}); "
            "rebuild the index with this model or serve it with the model that built it"
        )


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the `k` best scores per row, best first."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
