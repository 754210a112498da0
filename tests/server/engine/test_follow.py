"""A read-only replica following the writer's store: the same passages, the same answers,
after upserts, replacements, deletions, label reuse and graph growth."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from bertdot.server.index.corpus import Passage
from bertdot.server.index.index import Index
from bertdot.server.indexing.build import build_index
from tests.server.index.test_writes_index import state, upsert
from tests.support.fakes import FakeEncoder, make_passages, write_jsonl

ENCODER = FakeEncoder()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("follow")
    out = root / "index"
    build_index(
        ENCODER, write_jsonl(root / "c.jsonl", make_passages(40, seed=9)), out,
        progress=False, say=lambda _: None,
    )  # fmt: skip
    return out


@pytest.fixture
def pair(built: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    root = Path(shutil.copytree(built, tmp_path / "index"))
    writer = Index.open(root, writer=True)
    replica = Index.open(root, read_only=True)
    yield writer, replica
    replica.close()
    writer.close()


def test_a_replica_sees_nothing_new_until_it_follows_then_exactly_the_writer(pair) -> None:  # type: ignore[no-untyped-def]
    writer, replica = pair
    before = replica.sequence
    upsert(writer, Passage("a", None, "zebra quagga"), Passage("b", None, "okapi"))
    upsert(writer, Passage("a", None, "replaced zebra"))  # same id, new vector
    writer.delete(["b", "p0", "p1"])  # b was added and deleted since the replica last looked
    upsert(writer, Passage("c", "T", "takes a freed label"))
    # The graph changes only when the replica follows (hits are still read from the live
    # store, so a deleted passage already drops out of its answers).
    assert replica.sequence == before and "a" not in state(replica)

    assert replica.follow() == writer.sequence == replica.sequence
    assert state(replica) == state(writer)
    assert replica.count == writer.count == 40 + 2 - 2
    assert replica.follow() == writer.sequence  # nothing new: a no-op


def test_a_replica_follows_the_graph_growing_past_its_capacity(pair) -> None:  # type: ignore[no-untyped-def]
    writer, replica = pair
    capacity = replica.graph.capacity
    many = [Passage(f"n{i}", None, f"new passage number {i} w{i % 7}") for i in range(capacity)]
    upsert(writer, *many)
    replica.follow()
    assert replica.graph.capacity > capacity
    assert replica.count == writer.count and state(replica) == state(writer)


def test_following_while_the_writer_writes_loses_no_write(pair) -> None:  # type: ignore[no-untyped-def]
    writer, replica = pair
    done = threading.Event()

    def write() -> None:
        for i in range(60):
            upsert(writer, Passage(f"w{i}", None, f"concurrent write {i}"))
            if i % 3 == 0:
                writer.delete([f"w{i - 1}"])
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    while not done.is_set():
        replica.follow()  # each pass reads one consistent snapshot of the store
    thread.join()
    replica.follow()
    assert replica.sequence == writer.sequence
    assert state(replica) == state(writer) and replica.count == writer.count


def test_a_label_the_writer_gave_to_another_passage_is_not_answered_with_the_old_vector(
    pair,
) -> None:  # type: ignore[no-untyped-def]
    writer, replica = pair
    old = replica.get_passages(["p3"])["p3"]
    query = ENCODER.encode([old.encoder_input()]).vectors
    assert replica.search(query, k=1)[0][0].id == "p3"  # its own vector: the best match
    writer.delete(["p3"])
    upsert(writer, Passage("newcomer", None, "an unrelated text that takes the freed label"))
    assert writer.store.labels_for_ids(["newcomer"]) != {}  # the label was reused
    # The replica's graph still holds p3's vector under that label: the store's newer
    # passage must not be answered with p3's score.
    hits = replica.search(query, k=5)[0]
    assert "newcomer" not in {h.id for h in hits} and "p3" not in {h.id for h in hits}
    replica.follow()
    assert "p3" not in {h.id for h in replica.search(query, k=5)[0]}
