"""Search, streaming and re-ranking by id on a real server with a real index."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from bertdot.server.app.config import ServerConfig
from bertdot.server.encoding.encoder import Encoder
from bertdot.server.index.index import Index
from bertdot.server.indexing.build import build_index
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.support.fakes import make_passages, make_queries, write_jsonl
from tests.support.serving import ServerThread, serving

PASSAGES = make_passages(300, seed=3)
QUERIES = make_queries(PASSAGES, 200, seed=4)


@pytest.fixture(scope="module")
def index_dir(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search")
    out = root / "index"
    build_index(
        Encoder(tiny_artifact, device="cpu"),
        write_jsonl(root / "corpus.jsonl", PASSAGES),
        out,
        progress=False,
        say=lambda _: None,
    )
    return out


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, index_dir: Path) -> Iterator[ServerThread]:
    config = ServerConfig(model=tiny_artifact, index=index_dir, port=0, device="cpu")
    with serving(config) as thread:
        yield thread


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[pb_grpc.RetrievalStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.RetrievalStub(channel)


@pytest.fixture(scope="module")
def local(tiny_artifact: Path, index_dir: Path) -> Iterator[tuple[Encoder, Index]]:
    encoder = Encoder(tiny_artifact, device="cpu")
    index = Index.open(index_dir, expected_fingerprint=encoder.fingerprint)
    yield encoder, index
    index.close()


def ids(response: pb.SearchResponse) -> list[str]:
    return [h.id for h in response.hits]


def test_search_equals_in_process_and_scores_are_dot_products(
    stub: pb_grpc.RetrievalStub, local: tuple[Encoder, Index]
) -> None:
    encoder, index = local
    for query in QUERIES[:20]:
        response = stub.Search(pb.SearchRequest(query=query, k=10, return_text=True))
        vector = encoder.encode([query]).vectors
        expected = index.search(vector, 10)[0]
        assert ids(response) == [h.id for h in expected]
        stored = index.get_vectors(ids(response))
        np.testing.assert_allclose(
            [h.score for h in response.hits], stored @ vector[0], rtol=1e-4, atol=1e-3
        )
        assert [h.score for h in response.hits] == sorted(
            (h.score for h in response.hits), reverse=True
        )
        by_id = {p.id: p for p in PASSAGES}
        assert all(h.text == by_id[h.id].text for h in response.hits)
        assert response.stats.token_count > 2 and not response.stats.truncated
        t = response.timings
        assert t.total_us >= t.encode_us and t.search_us > 0 and t.batch_size >= 1


def test_search_defaults_and_options(stub: pb_grpc.RetrievalStub) -> None:
    default = stub.Search(pb.SearchRequest(query=QUERIES[0]))
    assert len(default.hits) == 10 and all(h.text == "" for h in default.hits)
    by_id = {p.id: p for p in PASSAGES}
    assert all(h.title == (by_id[h.id].title or "") for h in default.hits)  # titles always
    wide = stub.Search(pb.SearchRequest(query=QUERIES[0], k=1000, ef=4096))
    assert len(wide.hits) == len(PASSAGES)  # k beyond the index size returns all of it
    narrow = stub.Search(pb.SearchRequest(query=QUERIES[0], k=5, ef=1))  # ef raised to k
    assert len(narrow.hits) == 5


def test_stream_answers_every_id_once_with_unary_results(stub: pb_grpc.RetrievalStub) -> None:
    requests = [pb.SearchRequest(id=f"q{i}", query=q, k=5) for i, q in enumerate(QUERIES)]
    requests[17] = pb.SearchRequest(id="q17", query="", k=5)  # one bad query in the stream
    answers = list(stub.SearchStream(iter(requests)))
    assert sorted(a.id for a in answers) == sorted(r.id for r in requests)
    by_id = {a.id: a for a in answers}
    assert by_id["q17"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    for request in requests[:30]:
        if request.id == "q17":
            continue
        assert ids(by_id[request.id]) == ids(stub.Search(request))
    assert max(a.timings.batch_size for a in answers) > 1  # streamed queries shared batches


def test_64_concurrent_clients_get_single_call_results(
    server: ServerThread, stub: pb_grpc.RetrievalStub
) -> None:
    queries = QUERIES[:64]
    expected = {q: ids(stub.Search(pb.SearchRequest(query=q))) for q in queries}

    def client(query: str) -> tuple[str, list[str]]:
        with grpc.insecure_channel(server.target) as channel:
            own = pb_grpc.RetrievalStub(channel)
            return query, [
                h for _ in range(3) for h in ids(own.Search(pb.SearchRequest(query=query)))
            ]

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(client, queries))
    for query, got in results:
        assert got == expected[query] * 3


def test_a_lone_query_meeting_a_busy_index_neither_blocks_the_encoder_nor_is_lost(
    server: ServerThread, stub: pb_grpc.RetrievalStub, local: tuple[Encoder, Index]
) -> None:
    """A lone query is searched in the encoder thread only between the index thread's jobs;
    while a job runs there (here: one that waits, as a long write or snapshot would), the
    query goes to the index thread and waits its turn, and the encoder keeps serving."""
    encoder, index = local
    index_thread = server.server.service.core.workers.search
    query = QUERIES[7]
    release = threading.Event()
    job = index_thread.submit(release.wait, 30)
    try:
        pending = stub.Search.future(pb.SearchRequest(query=query, k=10), timeout=30)
        time.sleep(0.3)
        started = time.perf_counter()
        stub.Encode(pb.EncodeRequest(texts=["the encoder is free"]), timeout=10)
        encode_s = time.perf_counter() - started
        assert not pending.done()
    finally:
        release.set()
    assert job.result(10)
    response = pending.result()
    assert encode_s < 0.25  # not stuck behind the index job
    assert ids(response) == [h.id for h in index.search(encoder.encode([query]).vectors, 10)[0]]
    assert response.timings.search_us > 200_000  # it waited for its turn on the index thread


def test_rerank_by_passage_id(stub: pb_grpc.RetrievalStub, local: tuple[Encoder, Index]) -> None:
    encoder, index = local
    chosen = [p.id for p in PASSAGES[:50]]
    query = QUERIES[3]
    response = stub.Rerank(
        pb.RerankRequest(
            query=query,
            candidates=[pb.Candidate(passage_id=i) for i in chosen],
            return_text=True,
        )
    )
    scores = index.get_vectors(chosen) @ encoder.encode([query]).vectors[0]
    assert [r.passage_id for r in response.results] == [chosen[i] for i in np.argsort(-scores)]
    np.testing.assert_allclose(
        [r.score for r in response.results], np.sort(scores)[::-1], atol=1e-3
    )
    assert response.results[0].text == PASSAGES[response.results[0].index].text
    mixed = stub.Rerank(
        pb.RerankRequest(
            query=query,
            candidates=[
                pb.Candidate(passage_id=chosen[0]),
                # What the index encoded for that passage: its title, then its text.
                pb.Candidate(text=PASSAGES[0].encoder_input()),
            ],
        )
    )
    assert mixed.results[0].score == pytest.approx(mixed.results[1].score, abs=1e-3)


def test_rerank_unknown_id_is_not_found(stub: pb_grpc.RetrievalStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Rerank(
            pb.RerankRequest(query="q", candidates=[pb.Candidate(passage_id="no-such-passage")])
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'no-such-passage'" in caught.value.details()


@pytest.mark.parametrize(
    ("bad_id", "problem"), [("", "must not be empty"), ("  ", "must not be empty"),
                            ("x" * 513, "513 characters exceeds the limit of 512")]
)  # fmt: skip
def test_rerank_ids_are_validated_like_write_ids(
    stub: pb_grpc.RetrievalStub, bad_id: str, problem: str
) -> None:
    good = pb.Candidate(text="a candidate text")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Rerank(pb.RerankRequest(query="q", candidates=[good, pb.Candidate(passage_id=bad_id)]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == f"candidates[1].passage_id: {problem}"


def test_a_message_quoting_long_ids_stays_small_enough_to_reach_the_client(
    stub: pb_grpc.RetrievalStub,
) -> None:
    # Three 300-emoji ids quoted whole made a ~11 KB trailer, which gRPC clients refuse at
    # random (RESOURCE_EXHAUSTED instead of the NOT_FOUND sent: 16 of 40 before the fix).
    long_ids = [pb.Candidate(passage_id=f"{n}" + "🙂" * 300) for n in range(3)]
    codes = set()
    for _ in range(40):
        with pytest.raises(grpc.RpcError) as caught:
            stub.Rerank(pb.RerankRequest(query="q", candidates=long_ids, top_k=1))
        codes.add(caught.value.code())
    assert codes == {grpc.StatusCode.NOT_FOUND}
    details = caught.value.details()
    assert "3 passage id(s) not in the index" in details and len(details.encode()) <= 1024


def test_info_reports_index(stub: pb_grpc.RetrievalStub) -> None:
    info = stub.Info(pb.InfoRequest())
    assert info.index.size == len(PASSAGES)
    assert (info.index.m, info.index.ef_construction, info.index.default_ef) == (16, 200, 128)


def test_index_of_another_model_is_refused(
    tiny_bert: Path, index_dir: Path, tmp_path: Path
) -> None:
    from bertdot.export.pipeline import ExportOptions, export_artifact
    from bertdot.server.app.server import BertdotServer

    other = tmp_path / "other"
    export_artifact(ExportOptions(model=str(tiny_bert), out=other, precisions=("fp32",)), say=print)
    server = BertdotServer(ServerConfig(model=other, index=index_dir, port=0, device="cpu"))
    import asyncio

    from bertdot.server.index.index import IndexMismatchError

    async def start() -> None:
        try:
            await server.start()
        finally:
            await server.stop(grace=0)

    with pytest.raises(IndexMismatchError, match=r"fingerprint|another model|built"):
        asyncio.run(start())
