"""`bertdot index backup DIR DEST`: a consistent copy of an index, taken while it serves.

The graph is copied first, then the store through SQLite's online backup API (a consistent
snapshot, taken beside a live writer without stopping it). The store only grows in write
sequence, so the copy's store holds every write its graph holds, and more: a server started
on the copy replays the difference, as after any restart. A snapshot that replaces the
graph file mid-copy is noticed by its checksum against the manifest, and the copy retried.
The copy is checked (SQLite quick_check) before it is renamed into place, so a damaged
source never yields a backup that looks valid.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from bertdot.server.index.graph import fsync_dir, sha256_file
from bertdot.server.index.manifest import STORE_NAME, IndexLoadError, IndexManifest
from bertdot.server.index.store import PassageStore

ATTEMPTS = 5  # graph copies raced by a snapshot before giving up


def backup(index_dir: Path, dest: Path) -> str:
    """Write a copy of the index at `index_dir` to the new folder `dest`; returns a summary."""
    started = time.perf_counter()
    if dest.exists():
        raise IndexLoadError(f"backup destination {dest} already exists")
    if not (index_dir / STORE_NAME).is_file():
        IndexManifest.read(index_dir)  # names what is missing: not an index, unfinished build
        raise IndexLoadError(f"index {index_dir}: the passage store {STORE_NAME} is missing")
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        manifest = _copy_graph(index_dir, scratch)
        _copy_store(index_dir / STORE_NAME, scratch / STORE_NAME)
        copy = PassageStore(scratch / STORE_NAME, read_only=True)
        try:
            ok, found, _ = copy.integrity()
            count, sequence = copy.count(), copy.max_seq()
        finally:
            copy.close()
        if not ok:
            raise IndexLoadError(
                f"index {index_dir}: the passage store is damaged (SQLite quick_check: "
                f"{found[:200]}); no backup written"
            )
        manifest.write(scratch)
        fsync_dir(scratch)
        scratch.rename(dest)
        fsync_dir(dest.parent)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return (
        f"backup of {index_dir} written to {dest}: {count:,} passages, write sequence "
        f"{sequence} (graph at {manifest.graph_seq}), {time.perf_counter() - started:.1f} s"
    )


def _copy_graph(index_dir: Path, scratch: Path) -> IndexManifest:
    for _ in range(ATTEMPTS):
        manifest = IndexManifest.read(index_dir)
        try:
            shutil.copyfile(index_dir / manifest.graph_file, scratch / manifest.graph_file)
        except FileNotFoundError:  # replaced by a snapshot between the two reads
            continue
        if sha256_file(scratch / manifest.graph_file) == manifest.graph_sha256:
            return manifest
        (scratch / manifest.graph_file).unlink()
    raise IndexLoadError(
        f"index {index_dir}: the graph changed during {ATTEMPTS} copies in a row (snapshots "
        "too frequent?), or its file does not match its checksum; try again, or repair it"
    )


def _copy_store(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{quote(str(source.resolve()))}?mode=ro", uri=True)
    dst = sqlite3.connect(target)
    try:
        src.execute("PRAGMA busy_timeout=10000")
        src.backup(dst)
        dst.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        dst.close()
        src.close()
