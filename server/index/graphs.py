"""The graph of an index, whichever library keeps it: the interface the index needs, and the
factory that makes or loads the kind its manifest names (`vectors`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np

from bertdot.server.index.graph import HnswGraph
from bertdot.server.index.usearch_graph import UsearchGraph

VECTOR_KINDS = ("f32", "f16", "i8")  # the graph's own copy of the vectors: hnswlib, usearch


class VectorGraph(Protocol):
    """What the index needs of a graph (`HnswGraph`, or `UsearchGraph` for compact vectors)."""

    compact: bool  # True: its vectors are approximate, its candidates must be rescored
    vectors: str
    space: str

    @property
    def dim(self) -> int: ...

    @property
    def count(self) -> int: ...

    def set_num_threads(self, threads: int) -> None: ...

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None: ...

    def mark_deleted(self, label: int) -> None: ...

    def retire(self, label: int) -> None: ...

    def assume_deleted(self, labels: Iterable[int]) -> None: ...

    def get_vectors(self, labels: np.ndarray) -> np.ndarray: ...

    def search(self, vectors: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]: ...

    def save(self, path: str | Path) -> str: ...


def new_graph(
    vectors: str, space: str, dim: int, capacity: int, *, M: int, ef_construction: int
) -> VectorGraph:
    """An empty graph keeping its vectors as `vectors` ("f32": hnswlib; "f16", "i8": usearch)."""
    if vectors == "f32":
        return HnswGraph.create(space, dim, capacity, M=M, ef_construction=ef_construction)
    return UsearchGraph.create(
        space, dim, capacity, M=M, ef_construction=ef_construction, vectors=vectors
    )


def load_graph_file(
    vectors: str, path: Path, space: str, dim: int, sha256: str, deleted: Iterable[int] = ()
) -> VectorGraph:
    if vectors == "f32":
        return HnswGraph.load(path, space, dim, sha256, deleted)
    return UsearchGraph.load(path, space, dim, sha256, deleted, vectors=vectors)
