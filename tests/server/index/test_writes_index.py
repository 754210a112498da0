"""Writes at the index level (no server): replay after a crash, label reuse, growth, damaged
graph files and their repair, snapshots, the writer lock, read-only stores."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bertdot.cli.main import main as bertdot
from bertdot.server.index import store as store_module
from bertdot.server.index.corpus import Passage
from bertdot.server.index.index import Index, IndexLoadError, IndexManifest
from bertdot.server.index.lockfile import LOCK_NAME
from bertdot.server.index.store import PassageStore
from bertdot.server.indexing.build import build_index
from tests.support.fakes import FakeEncoder, make_passages, write_jsonl

ENCODER = FakeEncoder()
PASSAGES = make_passages(60, seed=5)


@pytest.fixture(scope="module", params=["f32", "f16", "i8"])
def built(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of each vector kind: hnswlib's float32 graph, usearch's compact ones."""
    root = tmp_path_factory.mktemp("windex")
    out = root / "index"
    corpus = write_jsonl(root / "c.jsonl", PASSAGES)
    build_index(ENCODER, corpus, out, progress=False, vectors=request.param, say=lambda _: None)
    return out


@pytest.fixture
def root(built: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "index"))


def upsert(index: Index, *passages: Passage) -> int:
    return index.upsert(
        list(passages), ENCODER.encode([p.encoder_input() for p in passages]).vectors
    )


def top(index: Index, text: str, k: int = 1000) -> dict[str, float]:
    hits = index.search(ENCODER.encode([text]).vectors, k=k, ef=1000)[0]
    return {h.id: h.score for h in hits}


def state(index: Index) -> dict[str, tuple[str, float]]:
    """Every passage the graph finds, with its stored text and its score for a fixed query."""
    hits = index.search(ENCODER.encode(["w1 w2 w3"]).vectors, k=1000, ef=1000)[0]
    return {h.id: (h.text or "", round(h.score, 4)) for h in hits}


def test_writes_after_the_saved_graph_replay_exactly(root: Path) -> None:
    index = Index.open(root, writer=True)
    upsert(index, Passage("a", None, "zebra quagga"), Passage("b", None, "okapi"))
    upsert(index, Passage("a", None, "replaced zebra"))  # same id: new text and vector
    index.delete(["b", "p0"])  # b: added and deleted after the saved graph
    upsert(index, Passage("c", "T", "reuses a freed label"))
    expected, count = state(index), index.count
    index.close()  # no snapshot: as after kill -9

    reopened = Index.open(root, writer=True)
    assert state(reopened) == expected and reopened.count == count == 61
    assert reopened.sequence == reopened.store.max_seq() and reopened.pending_writes > 0
    assert top(reopened, "replaced zebra", k=1)["a"] > 0
    assert {"b", "p0"}.isdisjoint(state(reopened))
    reopened.save_graph()
    reopened.close()
    saved = Index.open(root)
    assert saved.pending_writes == 0 and state(saved) == expected
    saved.close()


def test_labels_are_reused_and_the_graph_grows_by_doubling(root: Path) -> None:
    index = Index.open(root, writer=True)
    hnswlib = not index.graph.compact  # usearch grows on its own and keeps no tombstones
    if hnswlib:
        assert index.graph.capacity == 60  # type: ignore[attr-defined]
    freed = sorted(index.store.labels_for_ids(["p3", "p7"]).values())
    index.delete(["p3", "p7"])
    upsert(index, Passage("x", None, "one"), Passage("y", None, "two"))
    assert sorted(index.store.labels_for_ids(["x", "y"]).values()) == freed
    if hnswlib:
        assert index.graph._index.element_count == 60  # type: ignore[attr-defined]
    upsert(index, *(Passage(f"g{i}", None, f"growth {i} w{i}") for i in range(5)))
    assert index.count == 65
    if hnswlib:
        assert index.graph.capacity == 120  # type: ignore[attr-defined]
    assert set(top(index, "growth")) >= {f"g{i}" for i in range(5)}
    index.close()


def test_damaged_graph_names_the_repair_command_and_repair_rebuilds_it(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = Index.open(root, writer=True)
    upsert(index, Passage("late", None, "written after the build"))
    index.delete(["p1"])
    expected = state(index)
    index.close()
    graph = root / IndexManifest.read(root).graph_file
    graph.write_bytes(graph.read_bytes()[:-100])
    with pytest.raises(IndexLoadError, match=rf"corrupt or truncated.*bertdot index repair {root}"):
        Index.open(root)

    assert bertdot(["index", "repair", str(root)]) == 0
    assert "graph rebuilt from the 60 passages" in capsys.readouterr().out
    repaired = Index.open(root)
    assert state(repaired) == expected and repaired.pending_writes == 0
    repaired.close()
    assert bertdot(["index", "repair", str(root)]) == 0
    assert "graph file intact" in capsys.readouterr().out


def test_rebuild_graph_on_open_when_the_file_is_missing(root: Path) -> None:
    original = Index.open(root)
    expected = state(original)
    original.close()
    (root / IndexManifest.read(root).graph_file).unlink()
    with pytest.raises(IndexLoadError, match=r"missing.*bertdot index repair"):
        Index.open(root)
    reader = Index.open(root, rebuild_graph=True)  # not a writer: rebuilt in memory only
    assert reader.rebuilt and state(reader) == expected
    reader.close()
    writer = Index.open(root, writer=True, rebuild_graph=True)
    writer.close()
    manifest = IndexManifest.read(root)
    assert (root / manifest.graph_file).is_file()
    assert sorted(p.name for p in root.glob("graph*")) == [manifest.graph_file]


def test_snapshot_command_saves_pending_writes(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index = Index.open(root, writer=True)
    sequence = upsert(index, Passage("s", None, "snapshot me"))
    index.close()
    assert bertdot(["index", "snapshot", str(root)]) == 0
    assert f"graph saved at sequence {sequence} (1 writes replayed" in capsys.readouterr().out
    manifest = IndexManifest.read(root)
    assert manifest.graph_seq == sequence and manifest.count == 61
    assert bertdot(["index", "snapshot", str(root)]) == 0
    assert "nothing to save" in capsys.readouterr().out


def test_writer_lock_is_exclusive_and_dies_with_its_process(root: Path) -> None:
    first = Index.open(root, writer=True)
    with pytest.raises(IndexLoadError, match="already open for writing"):
        Index.open(root, writer=True)
    first.close()
    Index.open(root, writer=True).close()

    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path;"
            "from bertdot.server.index.lockfile import WriterLock;"
            "WriterLock.acquire(Path(sys.argv[1])); print('held', flush=True); input()",
            str(root),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(IndexLoadError, match=rf"pid {holder.pid}\)"):
        Index.open(root, writer=True)
    holder.kill()
    holder.wait(10)
    Index.open(root, writer=True).close()  # no stale lock after kill -9
    assert (root / LOCK_NAME).is_file()


def test_read_only_store_reads_and_refuses_writes(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = Index.open(root, read_only=True)
    assert index.count == 60 and index.store.get_by_ids(["p0"])["p0"].text == PASSAGES[0].text
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        upsert(index, Passage("no", None, "refused"))
    index.close()
    # A folder this process cannot write: the store is opened immutable (no -shm needed).
    monkeypatch.setattr(store_module.os, "access", lambda path, mode: False)
    store = PassageStore(root / "passages.sqlite", read_only=True)
    assert store.count() == 60
    assert "immutable=1" in store_module._read_only_uri(store.path)
    store.close()


def test_save_graph_never_overwrites_the_file_the_manifest_names(root: Path) -> None:
    index = Index.open(root, writer=True)
    index.save_graph()  # same sequence as the build: must go to a new file
    first = IndexManifest.read(root).graph_file
    time.sleep(0.001)
    index.save_graph()
    second = IndexManifest.read(root).graph_file
    index.close()
    assert len({"graph.hnsw", first, second}) == 3
    assert sorted(p.name for p in root.glob("graph*")) == [second]
    reopened = Index.open(root)
    assert reopened.count == 60
    reopened.close()


def test_vectors_of_replaced_passages_are_the_new_ones(root: Path) -> None:
    index = Index.open(root, writer=True)
    new = Passage("p2", None, "entirely new words here")
    upsert(index, new)
    np.testing.assert_allclose(
        index.get_vectors(["p2"]), ENCODER.encode([new.text]).vectors, atol=1e-6
    )
    index.close()
    reopened = Index.open(root)
    np.testing.assert_allclose(
        reopened.get_vectors(["p2"]), ENCODER.encode([new.text]).vectors, atol=1e-6
    )
    assert reopened.get_passages(["p2"])["p2"].text == new.text
    reopened.close()
