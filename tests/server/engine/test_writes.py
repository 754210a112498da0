"""Upsert and Delete on a real server with the tiny model: visibility, replacement, label
reuse, growth, validation, read-only mode, one writer per index, snapshots."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest

from bertdot.cli.main import main as bertdot
from bertdot.server.app.config import ServerConfig
from bertdot.server.index.index import Index, IndexLoadError, IndexManifest
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.reliability.helpers import (
    ServeProcess,
    build_tiny_index,
    copy_index,
    encode,
    everything,
    status_of,
)
from tests.support.fakes import make_passages
from tests.support.serving import ServerThread, serving

PASSAGES = make_passages(120, seed=7)


@pytest.fixture(scope="module")
def built(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_index(tiny_artifact, tmp_path_factory.mktemp("writes"), PASSAGES)


@pytest.fixture
def index_dir(built: Path, tmp_path: Path) -> Path:
    return copy_index(built, tmp_path / "index")


@pytest.fixture
def config(tiny_artifact: Path, index_dir: Path) -> ServerConfig:
    return ServerConfig(model=tiny_artifact, index=index_dir, port=0, device="cpu")


@pytest.fixture
def server(config: ServerConfig) -> Iterator[ServerThread]:
    with serving(config) as thread:
        yield thread


@pytest.fixture
def stub(server: ServerThread) -> Iterator[pb_grpc.RetrievalStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.RetrievalStub(channel)


def passage(pid: str, text: str, title: str = "") -> pb.Passage:
    return pb.Passage(id=pid, title=title, text=text)


def self_score(stub: pb_grpc.RetrievalStub, text: str) -> float:
    """The score a passage whose encoder input is `text` gets for the query `text`."""
    vector = encode(stub, [text])[0]
    return float(vector @ vector)


def test_upsert_is_searchable_at_once_with_its_sequence(stub: pb_grpc.RetrievalStub) -> None:
    before = stub.Info(pb.InfoRequest()).index
    assert (before.size, before.sequence, before.read_only) == (120, 120, False)
    new = [
        passage("n1", "zebra quagga okapi in the savanna"),
        passage("n2", "a recipe for sourdough bread", title="Baking"),
        passage("n3", "glaciers of patagonia retreat"),
    ]
    answer = stub.Upsert(pb.UpsertRequest(passages=new))
    assert (answer.upserted, answer.truncated, answer.sequence) == (3, 0, 123)
    assert answer.timings.total_us >= answer.timings.encode_us > 0
    found = everything(stub)
    for p in new:
        assert (found[p.id].text, found[p.id].title) == (p.text, p.title)
        query = f"{p.title} {p.text}" if p.title else p.text  # what the index encoded
        hits = stub.Search(pb.SearchRequest(query=query, k=1000, ef=4096)).hits
        score = next(h.score for h in hits if h.id == p.id)
        assert score == pytest.approx(self_score(stub, query), rel=1e-4)
    after = stub.Info(pb.InfoRequest()).index
    assert (after.size, after.sequence) == (123, 123)


def test_upsert_of_an_existing_id_replaces_text_and_vector(
    server: ServerThread, stub: pb_grpc.RetrievalStub
) -> None:
    index = server.server.index
    label = index.store.labels_for_ids(["p5"])["p5"]
    new_text = "completely different words about volcanoes"
    assert stub.Upsert(pb.UpsertRequest(passages=[passage("p5", new_text)])).upserted == 1
    assert stub.Info(pb.InfoRequest()).index.size == 120
    hit = everything(stub, new_text)["p5"]
    assert hit.text == new_text and hit.score == pytest.approx(self_score(stub, new_text), rel=1e-4)
    assert index.store.labels_for_ids(["p5"])["p5"] == label  # replaced in place
    by_id = stub.Rerank(
        pb.RerankRequest(
            query="volcano", candidates=[pb.Candidate(passage_id="p5"), pb.Candidate(text=new_text)]
        )
    ).results
    assert by_id[0].score == pytest.approx(by_id[1].score, abs=1e-3)


def test_delete_reports_unknown_ids_and_labels_are_reused(
    server: ServerThread, stub: pb_grpc.RetrievalStub
) -> None:
    index = server.server.index
    freed = sorted(index.store.labels_for_ids(["p1", "p2"]).values())
    answer = stub.Delete(pb.DeleteRequest(ids=["p1", "nope", "p2"]))
    assert (answer.deleted, list(answer.not_found), answer.sequence) == (2, ["nope"], 122)
    assert stub.Info(pb.InfoRequest()).index.size == 118
    assert {"p1", "p2"}.isdisjoint(everything(stub))
    elements = index.graph._index.element_count
    stub.Upsert(pb.UpsertRequest(passages=[passage("r1", "first reuse"), passage("r2", "second")]))
    assert sorted(index.store.labels_for_ids(["r1", "r2"]).values()) == freed
    assert index.graph._index.element_count == elements  # no growth with churn
    assert {"r1", "r2"} <= set(everything(stub))
    again = stub.Delete(pb.DeleteRequest(ids=["p1"]))
    assert (again.deleted, list(again.not_found), again.sequence) == (0, ["p1"], 124)


def test_a_search_never_sees_half_a_write(server: ServerThread) -> None:
    """One client searches alone (so the encoder thread searches for it, between the index
    thread's jobs) while another rewrites and deletes passages among its top hits. A write
    commits to the store and then updates the graph; a search reads the graph and then the
    store. Were they to interleave, labels found in the graph would be gone from the store
    and the answer would come back short."""
    query = PASSAGES[0].text
    stop = time.monotonic() + 3.0
    short: list[int] = []
    searches = 0

    def rewrite() -> None:
        with grpc.insecure_channel(server.target) as channel:
            writer = pb_grpc.RetrievalStub(channel)
            n = 0
            while time.monotonic() < stop:
                hot = [pb.Passage(id=f"hot{i}", text=f"{query} {n}") for i in range(8)]
                writer.Upsert(pb.UpsertRequest(passages=hot), timeout=10)
                writer.Delete(pb.DeleteRequest(ids=[f"hot{i}" for i in range(0, 8, 2)]), timeout=10)
                n += 1

    writer_thread = threading.Thread(target=rewrite)
    writer_thread.start()
    with grpc.insecure_channel(server.target) as channel:
        searcher = pb_grpc.RetrievalStub(channel)
        while time.monotonic() < stop:
            hits = searcher.Search(pb.SearchRequest(query=query, k=10), timeout=10).hits
            searches += 1
            if len(hits) != 10:
                short.append(len(hits))
    writer_thread.join(15)
    assert searches > 50
    assert short == []


def test_index_grows_past_its_initial_capacity(
    server: ServerThread, stub: pb_grpc.RetrievalStub
) -> None:
    graph = server.server.index.graph
    assert graph.capacity == 120  # a build sizes the graph to its corpus
    extra = make_passages(300, seed=11)
    for start in range(0, 300, 100):
        batch = [passage(f"g{p.id}", p.text) for p in extra[start : start + 100]]
        assert stub.Upsert(pb.UpsertRequest(passages=batch)).upserted == 100
    assert graph.capacity >= 420 and stub.Info(pb.InfoRequest()).index.size == 420
    assert len(everything(stub)) == 420


BAD_UPSERTS = {
    "passages: must not be empty": [],
    "passages[0].id: must not be empty": [passage("", "text")],
    "passages[1].id: must not be empty": [passage("a", "text"), passage(" \t", "text")],
    "passages[0].id: 513 characters exceeds the limit of 512": [passage("i" * 513, "text")],
    "passages: id 'a' appears more than once": [passage("a", "x"), passage("a", "y")],
    "passages[0].text: must not be empty": [passage("a", "  ")],
    "passages[0].text: 100001 characters exceeds": [passage("a", "w" * 100_001)],
    "passages[0].title: 100001 characters exceeds": [passage("a", "t", title="w" * 100_001)],
    "passages: 257 items exceeds the limit of 256": [passage(f"x{i}", "t") for i in range(257)],
}
BAD_DELETES = {
    "ids: must not be empty": [],
    "ids[1]: must not be empty": ["p1", ""],
    "ids: id 'p1' appears more than once": ["p1", "p1"],
}


def test_invalid_writes_are_refused_and_write_nothing(stub: pb_grpc.RetrievalStub) -> None:
    for message, passages in BAD_UPSERTS.items():
        with pytest.raises(grpc.RpcError) as caught:
            stub.Upsert(pb.UpsertRequest(passages=passages))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in caught.value.details()
    for message, ids in BAD_DELETES.items():
        with pytest.raises(grpc.RpcError) as caught:
            stub.Delete(pb.DeleteRequest(ids=ids))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in caught.value.details()
    info = stub.Info(pb.InfoRequest()).index
    assert (info.size, info.sequence) == (120, 120)


def test_read_only_server_refuses_writes_and_serves(config: ServerConfig, index_dir: Path) -> None:
    with serving(replace(config, read_only=True)) as thread:
        with grpc.insecure_channel(thread.target) as channel:
            stub = pb_grpc.RetrievalStub(channel)
            for call in (
                lambda: stub.Upsert(pb.UpsertRequest(passages=[passage("a", "text")])),
                lambda: stub.Delete(pb.DeleteRequest(ids=["p1"])),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                assert caught.value.details() == "server is read-only"
            assert stub.Info(pb.InfoRequest()).index.read_only
            assert len(stub.Search(pb.SearchRequest(query="the")).hits) == 10
        Index.open(index_dir, writer=True).close()  # a read-only server holds no writer lock


def test_unwritable_index_folder_is_served_read_only(
    config: ServerConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bertdot.server.app import server as app

    monkeypatch.setattr(app, "index_writable", lambda root: False)
    with serving(config) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        code = status_of(lambda: stub.Delete(pb.DeleteRequest(ids=["p1"])))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert stub.Info(pb.InfoRequest()).index.read_only


def test_server_without_index_refuses_writes(tiny_artifact: Path) -> None:
    config = ServerConfig(model=tiny_artifact, port=0, device="cpu")
    with serving(config) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        code = status_of(lambda: stub.Upsert(pb.UpsertRequest(passages=[passage("a", "b")])))
        assert code == grpc.StatusCode.FAILED_PRECONDITION


def test_one_writer_per_index(
    server: ServerThread, index_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(IndexLoadError, match=r"already open for writing by another process"):
        Index.open(index_dir, writer=True)
    assert bertdot(["index", "snapshot", str(index_dir)]) == 2
    assert "already open for writing" in capsys.readouterr().err
    Index.open(index_dir).close()  # readers are welcome


def test_acknowledged_writes_survive_a_restart_and_stop_saves_the_graph(
    config: ServerConfig, index_dir: Path
) -> None:
    with serving(config) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        stub.Upsert(
            pb.UpsertRequest(passages=[passage("kept", "durable words"), passage("p3", "x")])
        )
        sequence = stub.Delete(pb.DeleteRequest(ids=["p4"])).sequence
        before = everything(stub)
    assert IndexManifest.read(index_dir).graph_seq == sequence  # saved at shutdown
    with serving(config) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        after = everything(stub)
        assert stub.Info(pb.InfoRequest()).index.sequence == sequence
    assert {k: (h.text, h.score) for k, h in after.items()} == {
        k: (h.text, h.score) for k, h in before.items()
    }
    assert after["p3"].text == "x" and "p4" not in after and after["kept"].text == "durable words"


def test_periodic_snapshots_follow_writes(config: ServerConfig, index_dir: Path) -> None:
    periodic = replace(config, snapshot_interval_s=0.05)
    with serving(periodic) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        sequence = stub.Upsert(pb.UpsertRequest(passages=[passage("s", "snap")])).sequence
        saved = thread.server.snapshots
        assert saved is not None
        deadline = time.monotonic() + 10
        # The save writes the manifest, then counts itself: wait for both, as they are not
        # one step for an observer on another thread.
        while IndexManifest.read(index_dir).graph_seq != sequence or saved.saved == 0:
            assert time.monotonic() < deadline, "no snapshot within 10 s"
            time.sleep(0.02)
        assert saved.saved == 1
        time.sleep(0.2)
        assert saved.saved == 1  # nothing new, nothing saved
    graphs = sorted(p.name for p in index_dir.glob("graph*"))
    assert graphs == [f"graph.{sequence}.hnsw"]  # the build's graph file was replaced


def test_upsert_vectors_equal_the_encoders(
    stub: pb_grpc.RetrievalStub, server: ServerThread
) -> None:
    texts = [f"passage number {i} about topic {i % 7}" for i in range(40)]
    stub.Upsert(pb.UpsertRequest(passages=[passage(f"v{i}", t) for i, t in enumerate(texts)]))
    stored = server.server.index.get_vectors([f"v{i}" for i in range(40)])
    np.testing.assert_allclose(stored, encode(stub, texts), atol=1e-5)


@pytest.mark.slow
def test_serve_names_the_repair_command_and_rebuild_graph_recovers(
    tiny_artifact: Path, index_dir: Path
) -> None:
    graph = index_dir / IndexManifest.read(index_dir).graph_file
    graph.write_bytes(graph.read_bytes()[:-100])
    serve = ["--model", str(tiny_artifact), "--index", str(index_dir), "--device", "cpu"]
    refused = subprocess.run(
        [sys.executable, "-m", "bertdot.cli.main", "serve", "--port", "0", *serve],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 2
    assert "corrupt or truncated" in refused.stderr
    assert f"bertdot index repair {index_dir}" in refused.stderr
    with ServeProcess(*serve, "--rebuild-graph") as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.RetrievalStub(channel)
            assert stub.Info(pb.InfoRequest()).index.size == 120
            assert len(everything(stub)) == 120
        assert server.stop() == 0
    Index.open(index_dir).close()  # the rebuilt graph was saved: it opens without the flag


def test_write_settings_from_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertdot.cli.main import build_parser
    from bertdot.server.app.commands import config_from

    plain = config_from(build_parser().parse_args(["serve", "--model", "m"]))
    assert (plain.read_only, plain.snapshot_interval_s, plain.rebuild_graph) == (False, None, False)
    monkeypatch.setenv("BERTDOT_READ_ONLY", "1")
    monkeypatch.setenv("BERTDOT_SNAPSHOT_INTERVAL", "30")
    from_env = config_from(build_parser().parse_args(["serve", "--model", "m"]))
    assert (from_env.read_only, from_env.snapshot_interval_s) == (True, 30.0)
    flags = ["serve", "--model", "m", "--rebuild-graph", "--snapshot-interval", "5"]
    from_flags = config_from(build_parser().parse_args(flags))
    assert (from_flags.rebuild_graph, from_flags.snapshot_interval_s) == (True, 5.0)
