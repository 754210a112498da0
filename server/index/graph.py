"""A thin wrapper over hnswlib: similarity-aware spaces, real scores, safe save and load.

hnswlib reports distances; for both spaces used here the distance is `1 − similarity`
(`ip`: 1 − dot, `cosine`: 1 − cos), so the score returned is `1 − distance`. A dot-product
model gets `ip` (no normalisation: the scores are the model's dot products); a cosine model
gets `cosine`.

Not thread-safe for mixed use: `ef` is a setting of the whole graph, so the caller must not
run searches with different `ef` (or additions) concurrently. `bertdot.server.index.index.Index`
serialises them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

import hnswlib
import numpy as np

from bertdot.server.cores import usable_cores
from bertdot.server.index.exact import exact_top_k

log = logging.getLogger(__name__)
# Up to this many elements, a query the graph cannot fully answer is answered exactly
# (a scan of 200,000 × 768 floats: about a tenth of a second).
EXACT_FALLBACK_MAX = 200_000

SPACES = {"dot": "ip", "cosine": "cosine"}
ROWS_PER_SEARCH_THREAD = 4  # hnswlib searches on one thread unless rows > 4 × threads


def search_threads(rows: int, cores: int) -> int:
    """Threads for searching `rows` queries at once.

    hnswlib falls back to one thread whenever rows ≤ 4 × the threads asked for, so its
    default (every core) searched each batch the server forms (up to 64 rows on 16 cores)
    on one thread: on an H100 host the search stage then took 14-16 ms p50 at concurrency
    32, against 0.6 ms to encode the batch (`benchmarks/results/server-seed-cuda.md`).
    Asking for fewer threads, just under rows / 4, keeps every batch of 9 rows or more
    spread over the cores.
    """
    return max(1, min(cores, (rows - 1) // ROWS_PER_SEARCH_THREAD))


class GraphFileError(ValueError):
    """A saved graph is missing, truncated or does not match its recorded checksum."""


def space_for(similarity: str) -> str:
    try:
        return SPACES[similarity]
    except KeyError:
        raise ValueError(f"similarity {similarity!r} is not 'dot' or 'cosine'") from None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class HnswGraph:
    compact = False  # float32 vectors in the graph: its scores are exact
    vectors = "f32"

    def __init__(self, index: hnswlib.Index, space: str, deleted: Iterable[int] = ()) -> None:
        """`deleted`: labels marked deleted in `index` (hnswlib cannot report them)."""
        self._index = index
        self.space = space
        self._deleted = set(deleted)
        self._cores = usable_cores()

    @classmethod
    def create(
        cls, space: str, dim: int, capacity: int, *, M: int = 16, ef_construction: int = 200
    ) -> HnswGraph:
        index = hnswlib.Index(space=space, dim=dim)
        index.init_index(max_elements=max(capacity, 1), M=M, ef_construction=ef_construction)
        return cls(index, space)

    @classmethod
    def load(
        cls,
        path: str | Path,
        space: str,
        dim: int,
        expected_sha256: str,
        deleted: Iterable[int] = (),
    ) -> HnswGraph:
        """Load a saved graph after checking its sha256: hnswlib itself may crash or read
        garbage from a truncated file, so a damaged file is refused before it gets there."""
        path = Path(path)
        verify_file(path, expected_sha256)
        index = hnswlib.Index(space=space, dim=dim)
        try:
            index.load_index(str(path))
        except RuntimeError as exc:
            raise GraphFileError(f"graph file {path} cannot be loaded: {exc}") from exc
        return cls(index, space, deleted)

    @property
    def dim(self) -> int:
        return int(self._index.dim)

    @property
    def count(self) -> int:
        """Live elements (added minus marked deleted)."""
        return int(self._index.element_count) - len(self._deleted)

    @property
    def capacity(self) -> int:
        return int(self._index.max_elements)

    @property
    def M(self) -> int:
        return int(self._index.M)

    @property
    def ef_construction(self) -> int:
        return int(self._index.ef_construction)

    def set_num_threads(self, threads: int) -> None:
        """Threads for batch add and batch search; ≤ 0 means all cores."""
        self._cores = threads if threads > 0 else usable_cores()
        # The count itself, never -1: hnswlib's add_items runs on one thread when its
        # default is -1 (measured: a 1M-passage import used one of two cores).
        self._index.set_num_threads(self._cores)

    def resize(self, capacity: int) -> None:
        self._index.resize_index(capacity)

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Add (or overwrite, for an existing label) vectors, growing the capacity as needed."""
        if len(labels) == 0:
            return
        needed = int(self._index.element_count) + len(labels)
        if needed > self.capacity:
            self.resize(max(needed, 2 * self.capacity))
        self._index.add_items(np.asarray(vectors, dtype=np.float32), np.asarray(labels))
        self._deleted.difference_update(np.asarray(labels).tolist())

    def mark_deleted(self, label: int) -> None:
        """Idempotent: marking an already deleted label again is not an error."""
        try:
            self._index.mark_deleted(label)
        except RuntimeError as exc:
            if "already deleted" not in str(exc):
                raise
        self._deleted.add(label)

    def retire(self, label: int) -> None:
        """Mark `label` deleted even where the graph never held it (a passage added and deleted
        after the graph was saved, replayed from the store): a zero placeholder is inserted
        first. Every label the store ever handed out is then in the graph, so the store's
        free labels are exactly the graph's deleted ones and `count` stays right."""
        try:
            self.mark_deleted(label)
        except RuntimeError as exc:
            if "not found" not in str(exc):
                raise
            self.add(np.zeros((1, self.dim), dtype=np.float32), np.array([label]))
            self.mark_deleted(label)

    def assume_deleted(self, labels: Iterable[int]) -> None:
        """Tell the wrapper which labels the graph has marked deleted (hnswlib cannot say)."""
        self._deleted = set(labels)

    def get_vectors(self, labels: np.ndarray) -> np.ndarray:
        """The vectors as stored in the graph (normalised, for the cosine space)."""
        if len(labels) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        items = self._index.get_items(np.asarray(labels), return_type="numpy")
        return np.asarray(items, dtype=np.float32)

    def search(self, vectors: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` labels and scores per query (fewer columns when the graph holds fewer)."""
        queries = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        k = min(k, self.count)
        if k <= 0:
            return np.zeros((len(queries), 0), np.int64), np.zeros((len(queries), 0), np.float32)
        self._index.set_ef(max(ef, k))
        threads = search_threads(len(queries), self._cores)
        try:
            labels, distances = self._index.knn_query(queries, k=k, num_threads=threads)
        except RuntimeError:
            # hnswlib raises when a search finds fewer than k live elements (possible with
            # many deletions or a tiny ef); searching with ef = all elements finds them,
            # unless heavy churn left live elements the graph no longer reaches.
            self._index.set_ef(int(self._index.element_count))
            try:
                labels, distances = self._index.knn_query(queries, k=k, num_threads=threads)
            except RuntimeError:
                labels, distances = self._beyond_reach(queries, k)
        return labels.astype(np.int64), (1.0 - distances).astype(np.float32)

    def _beyond_reach(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Answers when the graph reaches fewer than `k` live elements from a query. Inner
        product is not a metric: a vector of small norm may be nobody's neighbour, so a
        graph can leave it unreachable (seen with many near-identical vectors, and after
        churn). A small graph is then searched exactly; a large one answers the hits it
        reaches (label -1 at distance +inf in the columns it cannot fill)."""
        if self._index.element_count <= EXACT_FALLBACK_MAX:
            return self._exact(queries, k)
        log.warning(
            "the graph reaches fewer than %d live passages from some queries; answering with "
            "fewer hits (`bertdot index repair` rebuilds the graph, which may reconnect them)",
            k,
        )
        labels = np.full((len(queries), k), -1, dtype=np.int64)
        distances = np.full((len(queries), k), np.inf, dtype=np.float32)
        for row, query in enumerate(queries):
            found = k
            while found > 0:
                try:
                    got_labels, got_distances = self._index.knn_query(query[None], k=found)
                except RuntimeError:
                    found //= 2
                    continue
                labels[row, :found] = got_labels[0]
                distances[row, :found] = got_distances[0]
                break
        return labels, distances

    def _exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over every live element, in hnswlib's terms (distance = 1 − score)."""
        ids = np.asarray(self._index.get_ids_list(), dtype=np.int64)
        live = ids[~np.isin(ids, np.fromiter(self._deleted, dtype=np.int64))]
        labels, scores = exact_top_k(queries, k, live, self.get_vectors, self.space)
        return labels, 1.0 - scores

    def save(self, path: str | Path) -> str:
        """Write atomically (temp file, fsync, rename, fsync the folder); returns the sha256.

        A crash leaves either the previous graph or the new one, never a partial file.
        """
        return save_atomically(Path(path), self._index.save_index)


def verify_file(path: Path, expected_sha256: str) -> None:
    """Refuse a missing graph file, or one whose sha256 differs from the manifest's: a
    library may crash or read garbage from a truncated file, so it never gets there."""
    if not path.is_file():
        raise GraphFileError(f"graph file {path} is missing")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise GraphFileError(
            f"graph file {path} is corrupt or truncated (sha256 {actual[:16]}…, "
            f"expected {expected_sha256[:16]}…)"
        )


def save_atomically(path: Path, write: Callable[[str], object]) -> str:
    """`write(temp path)`, fsync, rename over `path`, fsync the folder; returns the sha256.
    A crash leaves either the previous file or the new one, never a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    write(str(tmp))
    with open(tmp, "rb+") as handle:
        os.fsync(handle.fileno())
    digest = sha256_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return digest


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
