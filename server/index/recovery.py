"""Bring the graph (a cache) in line with the passage store (the source of truth) at open.

A saved graph records the store sequence it contains (`graph_seq`); the writes after it are
replayed. Replay is idempotent: re-adding a label overwrites its vector, marking an already
deleted label again is a no-op. A graph file that fails its checksum is either refused with
the command that repairs it, or rebuilt from the stored vectors.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bertdot.server.index.graph import GraphFileError
from bertdot.server.index.graphs import VectorGraph, load_graph_file, new_graph
from bertdot.server.index.manifest import IndexLoadError, IndexManifest
from bertdot.server.index.store import PassageStore

log = logging.getLogger(__name__)
_CHUNK = 10_000


def repair_hint(root: Path) -> str:
    return (
        f"run `bertdot index repair {root}` (or serve with --rebuild-graph) to rebuild the "
        "graph from the passage store"
    )


def load_graph(
    root: Path, manifest: IndexManifest, store: PassageStore, rebuild: bool
) -> tuple[VectorGraph, bool, int]:
    """The saved graph with newer writes replayed; if its file is missing or damaged, a graph
    rebuilt from the store when `rebuild` allows it. Returns (graph, rebuilt, through): the
    graph holds every write up to sequence `through` (another process may be writing the
    store meanwhile; a replica following it continues from there)."""
    try:
        graph = load_graph_file(
            manifest.vectors,
            root / manifest.graph_file,
            manifest.space,
            manifest.dim,
            manifest.graph_sha256,
        )
    except GraphFileError as exc:
        if not rebuild:
            raise IndexLoadError(f"{exc}; {repair_hint(root)}") from exc
        log.warning("%s; rebuilding the graph from the passage store", exc)
        through = store.max_seq()  # read first: a write racing the rebuild is replayed again
        return rebuild_graph(store, manifest), True, through
    through = replay(graph, store, manifest.graph_seq)
    graph.assume_deleted(store.free_labels())
    return graph, False, through


def replay(graph: VectorGraph, store: PassageStore, since: int) -> int:
    """Apply the writes after sequence `since`; returns the sequence the graph now holds."""
    changes = store.changes_since(since)
    graph.add(changes.vectors, changes.labels)
    for label in changes.deleted:
        graph.retire(label)
    return max(changes.through, since)


def rebuild_graph(store: PassageStore, manifest: IndexManifest) -> VectorGraph:
    """A new graph of every stored vector, with the manifest's parameters."""
    free = store.free_labels()
    graph = new_graph(
        manifest.vectors,
        manifest.space,
        manifest.dim,
        store.count() + len(free),
        M=manifest.M,
        ef_construction=manifest.ef_construction,
    )
    for chunk in store.iter_vectors(chunk=_CHUNK):
        graph.add(chunk.vectors, chunk.labels)
    for label in free:  # keeps every label ever handed out in the graph (see HnswGraph.retire)
        graph.retire(label)
    return graph
