"""The passage store: SQLite in WAL mode, the source of truth of an index.

Each row holds a passage, its vector (float32 little-endian BLOB), its integer hnswlib
label and the write sequence number `seq` that wrote it. The HNSW graph is a cache that
can be rebuilt (or brought up to date) from here: a saved graph records the highest `seq`
it contains, and `changes_since(seq)` returns what it lacks. Deleted labels go to
`free_labels` (with the deleting `seq`) and are reused by later additions, so the graph
does not grow with churn.

Thread-safety: one SQLite connection per thread (thread-local), so gRPC worker threads
read concurrently (WAL readers never block each other or the writer); writes are
serialised by a lock. A store may also be read by other processes while one writes.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np

from bertdot.server.index.corpus import Passage
from bertdot.server.index.damage import StoreDamaged, checked, is_corruption

VECTOR_DTYPE = np.dtype("<f4")
_CHUNK = 500  # ids per IN (...) query: well under SQLite's bound-variable limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS passages (
    id TEXT PRIMARY KEY,
    label INTEGER NOT NULL UNIQUE,
    title TEXT,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    seq INTEGER NOT NULL,
    source_line INTEGER
);
CREATE INDEX IF NOT EXISTS passages_seq ON passages(seq);
CREATE TABLE IF NOT EXISTS free_labels (label INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class DuplicateIdError(ValueError):
    """A passage id is already stored (or repeated within one addition)."""

    def __init__(self, pid: str, first_line: int | None) -> None:
        where = f" (first seen on line {first_line})" if first_line is not None else ""
        super().__init__(f"duplicate passage id {pid!r}{where}")
        self.id = pid
        self.first_line = first_line


@dataclass(frozen=True)
class Changes:
    """Writes after a given `seq`: vectors to (re-)add and labels to mark deleted, read in
    one snapshot of the store that holds every write up to `through`."""

    labels: np.ndarray
    vectors: np.ndarray
    deleted: list[int]
    through: int = 0


@dataclass(frozen=True)
class Written:
    """One committed write: the labels it touched (in request order), the ids it removed
    (deletions only) and its sequence number (the `seq` of its last row)."""

    labels: list[int]
    sequence: int
    ids: list[str] = field(default_factory=list)


class PassageStore:
    def __init__(self, path: str | Path, *, durable: bool = True, read_only: bool = False) -> None:
        """`durable=False` (bulk builds) syncs less often: committed writes still survive a
        killed process in WAL mode, only an OS crash may lose the last ones. `durable=True`
        (synchronous=FULL) makes a commit survive an OS crash too: a served write is
        acknowledged only after it. `read_only` opens the database read-only (replicas)."""
        self.path = Path(path)
        self.read_only = read_only
        self._sync = "FULL" if durable else "NORMAL"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._write_lock = threading.Lock()
        # Told once per damage met while serving (the server logs it and stops serving).
        self.on_damage: Callable[[StoreDamaged], None] | None = None
        self.damage: StoreDamaged | None = None
        self._open(read_only)

    @checked
    def _open(self, read_only: bool) -> None:
        if read_only:
            self._conn()  # fail now, not on the first query, if it cannot be opened
        else:
            self._conn().executescript(_SCHEMA)

    def _damaged(self, exc: sqlite3.DatabaseError) -> StoreDamaged:
        damage = StoreDamaged(self.path, str(exc))
        first = self.damage is None
        self.damage = damage
        if first and self.on_damage is not None:
            self.on_damage(damage)
        return damage

    def integrity(self) -> tuple[bool, str, float]:
        """SQLite's `quick_check` of every page (on a connection of its own, so the pages
        are read from the file, not from a cache): (ok, what it found, seconds)."""
        started = time.perf_counter()
        conn = sqlite3.connect(_read_only_uri(self.path), uri=True, check_same_thread=False)
        try:
            rows = conn.execute("PRAGMA quick_check(20)").fetchall()
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            rows = [(str(exc),)]
        finally:
            conn.close()
        found = "; ".join(str(r[0]) for r in rows)
        ok = found == "ok"
        if not ok:
            self._damaged(sqlite3.DatabaseError(found[:300]))
        return ok, found, time.perf_counter() - started

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self.read_only:
                conn = sqlite3.connect(
                    _read_only_uri(self.path),
                    uri=True,
                    check_same_thread=False,
                    isolation_level=None,
                )
            else:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={self._sync}")
            conn.execute("PRAGMA busy_timeout=10000")
            self._local.conn = conn
            self._connections.append(conn)
        return conn

    @checked
    def checkpoint(self) -> None:
        """Fold the WAL into the database file (after a bulk build, before it is shipped)."""
        with self._write_lock:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        self._local = threading.local()

    # -- writes ---------------------------------------------------------------------------

    @checked
    def add(
        self,
        passages: Sequence[Passage],
        vectors: np.ndarray,
        *,
        lines: Sequence[int] | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> list[int]:
        """Store new passages with their vectors in one transaction; returns their labels.

        `meta` is written in the same transaction (a build records its progress with it,
        so a checkpoint is never ahead of or behind the passages it describes).
        """
        if len(passages) != len(vectors):
            raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
        blobs = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)
        line_of: list[int | None] = [None] * len(passages) if lines is None else list(lines)
        with self._write_lock, self._transaction() as conn:
            self._refuse_duplicates(conn, passages, line_of)
            labels = self._allocate(conn, len(passages))
            seq = self._counter(conn, "next_seq", len(passages))
            conn.executemany(
                "INSERT INTO passages (id, label, title, text, vector, seq, source_line)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    (p.id, label, p.title, p.text, blobs[i].tobytes(), seq + i, line_of[i])
                    for i, (p, label) in enumerate(zip(passages, labels, strict=True))
                ),
            )
            self._put_meta(conn, meta or {})
        return labels

    @checked
    def upsert(self, passages: Sequence[Passage], vectors: np.ndarray) -> Written:
        """Add passages or replace the stored ones with the same id, in one transaction.

        A replaced passage keeps its label (the graph overwrites that vector in place) and
        takes a new `seq`, so a graph saved before this write replays it; new passages take
        freed labels first. The passage and its vector are one row: after a crash either
        both are there or neither.
        """
        if len(passages) != len(vectors):
            raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
        ids = [p.id for p in passages]
        if len(set(ids)) != len(ids):
            raise DuplicateIdError(next(i for n, i in enumerate(ids) if i in ids[:n]), None)
        blobs = np.ascontiguousarray(vectors, dtype=VECTOR_DTYPE)
        with self._write_lock, self._transaction() as conn:
            stored = dict(self._rows(conn, "id, label", "id", list(ids)))
            fresh = iter(self._allocate(conn, sum(i not in stored for i in ids)))
            labels = [stored[i] if i in stored else next(fresh) for i in ids]
            seq = self._counter(conn, "next_seq", len(passages))
            conn.executemany(
                "INSERT INTO passages (id, label, title, text, vector, seq)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET title = excluded.title,"
                " text = excluded.text, vector = excluded.vector, seq = excluded.seq,"
                " source_line = NULL",
                (
                    (p.id, label, p.title, p.text, blobs[n].tobytes(), seq + n)
                    for n, (p, label) in enumerate(zip(passages, labels, strict=True))
                ),
            )
        return Written(labels, seq + len(passages) - 1)

    @checked
    def remove(self, ids: Iterable[str]) -> Written:
        """Remove passages; their labels become free for reuse. Unknown ids are skipped."""
        with self._write_lock, self._transaction() as conn:
            rows = self._rows(conn, "label, id", "id", list(dict.fromkeys(ids)))
            freed = [label for label, _ in rows]
            seq = self._counter(conn, "next_seq", len(freed))
            conn.executemany("DELETE FROM passages WHERE label = ?", ((x,) for x in freed))
            conn.executemany(
                "INSERT INTO free_labels (label, seq) VALUES (?, ?)",
                ((label, seq + i) for i, label in enumerate(freed)),
            )
        return Written(freed, seq + len(freed) - 1, [pid for _, pid in rows])

    @checked
    def delete(self, ids: Iterable[str]) -> list[int]:
        """Remove passages; their labels become free for reuse. Returns the freed labels."""
        return self.remove(ids).labels

    @checked
    def set_meta(self, values: Mapping[str, str]) -> None:
        with self._write_lock, self._transaction() as conn:
            self._put_meta(conn, values)

    # -- reads ----------------------------------------------------------------------------

    @checked
    def count(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    @checked
    def max_seq(self) -> int:
        """The sequence number of the latest write (0 for an empty store)."""
        return int(self.get_meta("next_seq") or 1) - 1

    @checked
    def get_meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @checked
    def get_by_ids(self, ids: Sequence[str]) -> dict[str, Passage]:
        """The stored passages among `ids` (unknown ids are absent from the answer)."""
        rows = self._rows(self._conn(), "id, title, text", "id", list(ids))
        return {pid: Passage(pid, title, text) for pid, title, text in rows}

    @checked
    def get_by_labels(
        self, labels: Sequence[int], through: int | None = None
    ) -> dict[int, Passage]:
        """The passages holding `labels`; with `through`, only those written at or before
        that sequence (what a graph holding the writes up to it has the vectors of)."""
        rows = self._rows(self._conn(), "label, id, title, text", "label", list(labels), through)
        return {label: Passage(pid, title, text) for label, pid, title, text in rows}

    @checked
    def vectors_for_labels(self, labels: Sequence[int]) -> dict[int, np.ndarray]:
        """The float32 vectors of `labels` (those the store holds): what a compact graph's
        candidates are rescored with."""
        rows = self._rows(self._conn(), "label, vector", "label", list(labels))
        return {label: np.frombuffer(blob, dtype=VECTOR_DTYPE) for label, blob in rows}

    @checked
    def headers_for_labels(
        self, labels: Sequence[int], through: int | None = None
    ) -> dict[int, tuple[str, str | None]]:
        """Id and title only: search hits carry titles always, texts only on request."""
        rows = self._rows(self._conn(), "label, id, title", "label", list(labels), through)
        return {label: (pid, title) for label, pid, title in rows}

    @checked
    def ids_for_labels(self, labels: Sequence[int]) -> dict[int, str]:
        return dict(self._rows(self._conn(), "label, id", "label", list(labels)))

    @checked
    def labels_for_ids(self, ids: Sequence[str]) -> dict[str, int]:
        return dict(self._rows(self._conn(), "id, label", "id", list(ids)))

    @checked
    def labels(self) -> np.ndarray:
        """Every live label, ascending."""
        rows = self._conn().execute("SELECT label FROM passages ORDER BY label").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    @checked
    def free_labels(self) -> list[int]:
        """Labels of deleted passages not yet reused (marked deleted in an up-to-date graph)."""
        return [r[0] for r in self._conn().execute("SELECT label FROM free_labels ORDER BY label")]

    @checked
    def last_added(self) -> tuple[str, int | None] | None:
        """(id, source line) of the most recent addition: where an interrupted build stopped."""
        row = (
            self._conn()
            .execute("SELECT id, source_line FROM passages ORDER BY seq DESC LIMIT 1")
            .fetchone()
        )
        return None if row is None else (str(row[0]), row[1])

    @checked
    def iter_vectors(self, chunk: int = 8192, after_seq: int = 0) -> Iterator[Changes]:
        """Stored vectors with their labels, `chunk` rows at a time (bounded memory)."""
        cursor = self._conn().execute(
            "SELECT label, vector FROM passages WHERE seq > ? ORDER BY seq", (after_seq,)
        )
        while rows := cursor.fetchmany(chunk):
            labels = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            flat = np.frombuffer(b"".join(r[1] for r in rows), dtype=VECTOR_DTYPE)
            yield Changes(labels, flat.reshape(len(rows), -1), [])

    @checked
    def changes_since(self, seq: int) -> Changes:
        """Everything written after `seq`: what a graph saved at `seq` must replay.

        The reads share one transaction, so another process writing meanwhile cannot slip a
        write between them: the answer is exactly the writes in (`seq`, `through`]."""
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            through = self.max_seq()
            parts = list(self.iter_vectors(after_seq=seq))
            deleted = conn.execute(
                "SELECT label FROM free_labels WHERE seq > ? ORDER BY seq", (seq,)
            ).fetchall()
        finally:
            conn.execute("COMMIT")
        live = np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int64)
        vectors = np.concatenate([p.vectors for p in parts]) if parts else np.zeros((0, 0))
        reused = set(live.tolist())
        return Changes(live, vectors, [r[0] for r in deleted if r[0] not in reused], through)

    # -- internals ------------------------------------------------------------------------

    def _transaction(self) -> _Transaction:
        return _Transaction(self._conn())

    def _rows(
        self,
        conn: sqlite3.Connection,
        columns: str,
        key: str,
        values: list[object],
        through: int | None = None,
    ) -> list[tuple]:
        rows: list[tuple] = []
        for start in range(0, len(values), _CHUNK):
            part: list[object] = values[start : start + _CHUNK]
            marks = ",".join("?" * len(part))
            sql = f"SELECT {columns} FROM passages WHERE {key} IN ({marks})"
            if through is not None:
                sql += " AND seq <= ?"
                part = [*part, through]
            rows.extend(conn.execute(sql, part).fetchall())
        return rows

    def _refuse_duplicates(
        self, conn: sqlite3.Connection, passages: Sequence[Passage], lines: list[int | None]
    ) -> None:
        first: dict[str, int | None] = {}
        for p, line in zip(passages, lines, strict=True):
            if p.id in first:
                raise DuplicateIdError(p.id, first[p.id])
            first[p.id] = line
        for pid, line in self._rows(conn, "id, source_line", "id", list(first)):
            raise DuplicateIdError(pid, line)

    def _allocate(self, conn: sqlite3.Connection, n: int) -> list[int]:
        """Freed labels first (lowest first), then fresh ones."""
        reused = [
            r[0] for r in conn.execute("SELECT label FROM free_labels ORDER BY label LIMIT ?", (n,))
        ]
        conn.executemany("DELETE FROM free_labels WHERE label = ?", ((x,) for x in reused))
        fresh = self._counter(conn, "next_label", n - len(reused), start=0)
        return reused + list(range(fresh, fresh + n - len(reused)))

    def _counter(self, conn: sqlite3.Connection, key: str, n: int, start: int = 1) -> int:
        """Reserve `n` values of a monotonic counter kept in `meta`; returns the first."""
        row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        first = int(row[0]) if row else start
        self._put_meta(conn, {key: str(first + n)})
        return first

    @staticmethod
    def _put_meta(conn: sqlite3.Connection, values: Mapping[str, str]) -> None:
        conn.executemany(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            values.items(),
        )


def _read_only_uri(path: Path) -> str:
    """A read-only SQLite URI. In a folder this process cannot write, SQLite cannot create
    the WAL index (-shm); if no WAL content is pending, `immutable=1` reads the database
    file alone (correct: nobody can be writing it)."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    wal = path.with_name(path.name + "-wal")
    pending = wal.is_file() and wal.stat().st_size > 0
    if not os.access(path.parent, os.W_OK) and not pending:
        uri += "&immutable=1"
    return uri


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT (ROLLBACK on error): the write lock is taken up front, so a
    concurrent writer waits at BEGIN instead of failing halfway."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type: object, *_: object) -> None:
        self.conn.execute("ROLLBACK" if exc_type else "COMMIT")
