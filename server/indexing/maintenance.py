"""Offline graph maintenance: `bertdot index snapshot` and `bertdot index repair`.

Both take the index's writer lock, so they refuse to run beside a server that accepts
writes (whose own snapshots would otherwise race theirs).
"""

from __future__ import annotations

from pathlib import Path

from bertdot.server.index.index import Index


def snapshot(index_dir: Path) -> str:
    """Replay the writes newer than the saved graph and save it; returns what happened."""
    index = Index.open(index_dir, writer=True)
    try:
        return _save(index)
    finally:
        index.close()


def repair(index_dir: Path) -> str:
    """Rebuild a graph file that is missing or fails its checksum from the passage store (the
    source of truth); an intact graph is brought up to date and saved instead."""
    index = Index.open(index_dir, writer=True, rebuild_graph=True)
    try:
        if index.rebuilt:  # `open` has saved it already
            return (
                f"{index_dir}: graph rebuilt from the {index.count:,} passages of the store "
                f"and saved (sequence {index.sequence})"
            )
        return f"{index_dir}: graph file intact (checksum ok); " + _save(index)
    finally:
        index.close()


def _save(index: Index) -> str:
    pending = index.pending_writes
    if pending <= 0:
        return f"graph already holds every write (sequence {index.sequence}); nothing to save"
    index.save_graph()
    return (
        f"graph saved at sequence {index.sequence} ({pending:,} writes replayed from the store, "
        f"{index.count:,} passages)"
    )
