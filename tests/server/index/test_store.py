"""The passage store: labels, sequence numbers, duplicates, deletions and concurrent readers."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bertdot.server.index.corpus import Passage
from bertdot.server.index.store import DuplicateIdError, PassageStore


def _passages(ids: list[str]) -> list[Passage]:
    return [Passage(i, f"title {i}" if n % 2 else None, f"text of {i}") for n, i in enumerate(ids)]


def _vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PassageStore]:
    s = PassageStore(tmp_path / "p.sqlite")
    yield s
    s.close()


def test_add_assigns_labels_and_increasing_seq(store: PassageStore) -> None:
    first = store.add(_passages(["a", "b", "c"]), _vectors(3), meta={"k": "v"})
    second = store.add(_passages(["d"]), _vectors(1))
    assert (first, second) == ([0, 1, 2], [3])
    assert store.count() == 4
    assert store.max_seq() == 4
    assert store.get_meta("k") == "v"
    assert store.last_added() == ("d", None)
    rows = store._conn().execute("SELECT id, seq FROM passages ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == ["a", "b", "c", "d"]
    assert [r[1] for r in rows] == [1, 2, 3, 4]


def test_lookups_by_id_and_label(store: PassageStore) -> None:
    passages = _passages([f"id{i}" for i in range(1200)])  # more than one IN (...) chunk
    store.add(passages, _vectors(1200))
    found = store.get_by_ids([p.id for p in passages] + ["missing"])
    assert len(found) == 1200 and "missing" not in found
    assert found["id1"] == passages[1]
    assert store.get_by_labels([5, 1199, 5000]) == {5: passages[5], 1199: passages[1199]}
    assert store.labels_for_ids(["id3", "nope"]) == {"id3": 3}
    assert store.ids_for_labels([4]) == {4: "id4"}
    assert store.labels().tolist() == list(range(1200))


def test_vectors_round_trip_exactly(store: PassageStore) -> None:
    vectors = _vectors(25, dim=16)
    store.add(_passages([str(i) for i in range(25)]), vectors)
    chunks = list(store.iter_vectors(chunk=10))
    assert [len(c.labels) for c in chunks] == [10, 10, 5]
    np.testing.assert_array_equal(np.concatenate([c.vectors for c in chunks]), vectors)
    np.testing.assert_array_equal(np.concatenate([c.labels for c in chunks]), np.arange(25))


def test_duplicate_in_store_names_first_line_and_rolls_back(store: PassageStore) -> None:
    store.add(_passages(["a", "b"]), _vectors(2), lines=[1, 2])
    with pytest.raises(DuplicateIdError, match=r"'b' \(first seen on line 2\)"):
        store.add(_passages(["c", "b"]), _vectors(2), lines=[3, 4], meta={"progress": "4"})
    assert store.count() == 2
    assert store.get_meta("progress") is None  # meta is part of the failed transaction
    assert store.add(_passages(["c"]), _vectors(1)) == [2]  # no label was consumed


def test_duplicate_within_one_batch(store: PassageStore) -> None:
    with pytest.raises(DuplicateIdError, match=r"'x' \(first seen on line 10\)"):
        store.add(_passages(["x", "y", "x"]), _vectors(3), lines=[10, 11, 12])
    assert store.count() == 0


def test_length_mismatch_refused(store: PassageStore) -> None:
    with pytest.raises(ValueError, match="2 passages but 3 vectors"):
        store.add(_passages(["a", "b"]), _vectors(3))


def test_delete_frees_labels_for_reuse_and_changes_replay(store: PassageStore) -> None:
    store.add(_passages(["a", "b", "c", "d"]), _vectors(4))
    saved_at = store.max_seq()
    assert store.delete(["c", "a", "unknown"]) == [0, 2]
    assert store.count() == 2
    assert store.free_labels() == [0, 2]
    changes = store.changes_since(saved_at)
    assert changes.labels.tolist() == [] and sorted(changes.deleted) == [0, 2]

    fresh = _vectors(1, seed=9)
    assert store.add(_passages(["e"]), fresh) == [0]  # lowest free label first
    changes = store.changes_since(saved_at)
    assert changes.labels.tolist() == [0]  # label 0 is live again: overwrite, not delete
    np.testing.assert_array_equal(changes.vectors, fresh)
    assert changes.deleted == [2]
    assert store.changes_since(store.max_seq()).labels.size == 0


def test_wal_mode_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    store = PassageStore(path)
    store.add(_passages(["a"]), _vectors(1))
    assert store._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()
    # Another process (here: a plain connection) sees the committed rows.
    assert sqlite3.connect(path).execute("SELECT id FROM passages").fetchall() == [("a",)]
    reopened = PassageStore(path)
    assert reopened.add(_passages(["b"]), _vectors(1)) == [1]
    reopened.close()


def test_concurrent_readers_while_writing(store: PassageStore) -> None:
    store.add(_passages(["seed"]), _vectors(1))
    errors: list[BaseException] = []
    stop = threading.Event()

    def read() -> None:
        try:
            while not stop.is_set():
                assert store.get_by_ids(["seed"])["seed"].id == "seed"
                store.count()
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    for batch in range(30):
        store.add(_passages([f"{batch}-{i}" for i in range(10)]), _vectors(10))
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert store.count() == 301
