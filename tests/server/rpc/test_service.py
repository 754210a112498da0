"""The gRPC service end to end: a real server on port 0 with the tiny model."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertdot.server.app.config import BatchingConfig, ServerConfig, TLSConfig
from bertdot.server.encoding.encoder import Encoder
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.support.certs import make_certs
from tests.support.serving import ServerThread, serving

TEXTS = ["what is dense retrieval", "how to bake bread", "the capital of france is paris"]


@pytest.fixture(scope="module")
def encode_server(tiny_artifact: Path) -> Iterator[ServerThread]:
    """A server without an index (encode and re-rank by text only)."""
    config = ServerConfig(model=tiny_artifact, port=0, metrics_port=0, device="cpu")
    with serving(config) as thread:
        yield thread


@pytest.fixture(scope="module")
def stub(encode_server: ServerThread) -> Iterator[pb_grpc.RetrievalStub]:
    with grpc.insecure_channel(encode_server.target) as channel:
        yield pb_grpc.RetrievalStub(channel)


def code_of(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()  # type: ignore[operator]
    return caught.value.code()


def test_info_describes_model(stub: pb_grpc.RetrievalStub, tiny_artifact: Path) -> None:
    info = stub.Info(pb.InfoRequest())
    assert info.model.dim == 32 and info.model.pooling == "cls"
    assert info.model.similarity == "dot" and info.model.max_length == 512
    assert info.model.provider == "CPUExecutionProvider" and info.model.precision == "fp32"
    assert info.model.artifact_fingerprint == Encoder(tiny_artifact).fingerprint
    assert not info.HasField("index")


def test_encode_equals_in_process_encoder(stub: pb_grpc.RetrievalStub, tiny_artifact: Path) -> None:
    expected = Encoder(tiny_artifact, device="cpu").encode(TEXTS)
    response = stub.Encode(pb.EncodeRequest(texts=TEXTS))
    got = np.array([e.values for e in response.embeddings], dtype=np.float32)
    np.testing.assert_allclose(got, expected.vectors, atol=1e-5)
    assert [s.token_count for s in response.stats] == expected.token_counts.tolist()
    assert response.dim == 32 and response.timings.total_us > 0
    one = stub.Encode(pb.EncodeRequest(texts=TEXTS[:1]))
    np.testing.assert_allclose(one.embeddings[0].values, expected.vectors[0], atol=1e-5)


def test_encode_stream_tags_answers_and_isolates_errors(stub: pb_grpc.RetrievalStub) -> None:
    requests = [pb.EncodeRequest(id=f"r{i}", texts=[f"text number {i}"]) for i in range(20)]
    requests.insert(5, pb.EncodeRequest(id="bad", texts=[""]))
    answers = {a.id: a for a in stub.EncodeStream(iter(requests))}
    assert set(answers) == {r.id for r in requests}
    assert answers["bad"].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "texts[0]: must not be empty" in answers["bad"].error.message
    assert all(len(answers[f"r{i}"].embeddings) == 1 for i in range(20))


def test_rerank_by_text_scores_are_dot_products(
    stub: pb_grpc.RetrievalStub, tiny_artifact: Path
) -> None:
    encoder = Encoder(tiny_artifact, device="cpu")
    query = "bread recipe"
    vectors = encoder.encode([query, *TEXTS]).vectors
    expected = vectors[1:] @ vectors[0]
    response = stub.Rerank(
        pb.RerankRequest(
            query=query, candidates=[pb.Candidate(text=t) for t in TEXTS], return_text=True
        )
    )
    assert [r.index for r in response.results] == np.argsort(-expected).tolist()
    for r in response.results:
        assert r.score == pytest.approx(expected[r.index], abs=1e-4)
        assert r.text == TEXTS[r.index]
    top = stub.Rerank(
        pb.RerankRequest(query=query, candidates=[pb.Candidate(text=t) for t in TEXTS], top_k=1)
    )
    assert len(top.results) == 1 and top.results[0].index == response.results[0].index
    assert response.candidates_encoded == 3 and response.query_stats.token_count == 4


def rerank(query: str, *candidates: pb.Candidate) -> pb.RerankRequest:
    return pb.RerankRequest(query=query, candidates=list(candidates))


X = pb.Candidate(text="x")
INVALID = grpc.StatusCode.INVALID_ARGUMENT
ERROR_ROWS = [
    ("empty query", lambda s: s.Rerank(rerank("", X)), INVALID, "query: must not be empty"),
    ("blank query", lambda s: s.Rerank(rerank("  \n", X)), INVALID, "query: must not be empty"),
    ("oversized query", lambda s: s.Rerank(rerank("a" * 9000, X)), INVALID,
     "query: 9000 characters exceeds the limit of 8192"),
    ("no candidates", lambda s: s.Rerank(rerank("q")), INVALID, "candidates: must not be empty"),
    ("unset candidate", lambda s: s.Rerank(rerank("q", pb.Candidate())), INVALID,
     "candidates[0].text: must not be empty"),
    ("no texts", lambda s: s.Encode(pb.EncodeRequest()), INVALID, "texts: must not be empty"),
    ("too many texts", lambda s: s.Encode(pb.EncodeRequest(texts=["x"] * 257)), INVALID,
     "texts: 257 items exceeds the limit of 256"),
    ("search without index", lambda s: s.Search(pb.SearchRequest(query="q")),
     grpc.StatusCode.FAILED_PRECONDITION, "no index loaded"),
    ("k too large", lambda s: s.Search(pb.SearchRequest(query="q", k=1001)), INVALID,
     "k: 1001 is out of range 1..1000"),
    ("ef zero", lambda s: s.Search(pb.SearchRequest(query="q", ef=0)), INVALID,
     "ef: 0 is out of range 1..4096"),
    ("ef too large", lambda s: s.Search(pb.SearchRequest(query="q", ef=5000)), INVALID,
     "ef: 5000 is out of range 1..4096"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "call", "code", "message"), ERROR_ROWS, ids=[r[0] for r in ERROR_ROWS]
)
def test_error_table(
    stub: pb_grpc.RetrievalStub, name: str, call: object, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(stub)  # type: ignore[operator]
    assert caught.value.code() == code
    assert message in caught.value.details()
    # The server keeps serving the next valid request.
    assert stub.Encode(pb.EncodeRequest(texts=["still alive"])).dim == 32


def test_message_size_limit_is_enforced(tiny_artifact: Path) -> None:
    config = ServerConfig(model=tiny_artifact, port=0, device="cpu", max_message_bytes=4096)
    with serving(config) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        code = code_of(lambda: stub.Encode(pb.EncodeRequest(texts=["word " * 2000])))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_internal_errors_do_not_leak(
    encode_server: ServerThread, stub: pb_grpc.RetrievalStub
) -> None:
    core = encode_server.server.service.core
    assert core is not None
    original = core.encoder.encode_tokenized

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("secret path /etc/passwd")

    core.encoder.encode_tokenized = broken  # type: ignore[method-assign]
    try:
        for texts in (TEXTS, TEXTS[:1]):  # bulk work and a micro-batched query
            with pytest.raises(grpc.RpcError) as caught:
                stub.Encode(pb.EncodeRequest(texts=texts))
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert "secret" not in caught.value.details()
    finally:
        core.encoder.encode_tokenized = original  # type: ignore[method-assign]


def test_metrics_endpoint(encode_server: ServerThread, stub: pb_grpc.RetrievalStub) -> None:
    stub.Encode(pb.EncodeRequest(texts=TEXTS[:1]))
    with urllib.request.urlopen(
        f"http://127.0.0.1:{encode_server.server.metrics_port}/metrics"
    ) as r:
        text = r.read().decode()
    assert 'bertdot_requests_total{code="OK",method="Encode"}' in text
    names = [
        "bertdot_request_latency_seconds_bucket",
        "bertdot_batch_size_bucket",
        "bertdot_queue_depth",
        "bertdot_index_size",
        "bertdot_stage_latency_seconds",
    ]
    for name in names:
        assert name in text


def _block_encoder(thread: ServerThread) -> threading.Event:
    """Occupy the encoder thread until the returned event is set."""
    release = threading.Event()
    thread.server.workers.encoder.submit(release.wait, 30)
    return release


def test_deadline_shorter_than_queue_wait_costs_no_compute(tiny_artifact: Path) -> None:
    config = ServerConfig(model=tiny_artifact, port=0, device="cpu")
    with serving(config) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        batcher = thread.server.batcher
        assert batcher is not None
        before = batcher.texts_encoded
        release = _block_encoder(thread)
        try:
            code = code_of(lambda: stub.Encode(pb.EncodeRequest(texts=["late"]), timeout=0.3))
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED
            # The server's clock for the deadline started when the request arrived, a little
            # after the client's: let it pass there too before the encoder is freed.
            time.sleep(0.3)
        finally:
            release.set()
        stub.Encode(pb.EncodeRequest(texts=["after"]))  # the next batch runs...
        assert batcher.texts_encoded == before + 1  # ...and only it cost compute


def test_overload_is_refused_at_once_and_recovers(tiny_artifact: Path) -> None:
    config = ServerConfig(
        model=tiny_artifact,
        port=0,
        device="cpu",
        batching=BatchingConfig(max_queue=4, max_batch_size=2),
    )
    with serving(config) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        release = _block_encoder(thread)
        codes: list[grpc.StatusCode] = []
        elapsed: list[float] = []

        def one(i: int) -> None:
            started = time.perf_counter()
            try:
                stub.Encode(pb.EncodeRequest(texts=[f"query {i}"]), timeout=20)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as err:
                codes.append(err.code())
                elapsed.append(time.perf_counter() - started)

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(one, i) for i in range(16)]
            time.sleep(1.0)
            refused_early = codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
            release.set()
            for f in futures:
                f.result()
        # Admitted: at most one batch taken (2) plus a full queue (4); the rest refused
        # while the encoder was still blocked, and every admitted request served.
        assert refused_early >= 10
        assert codes.count(grpc.StatusCode.OK) == 16 - refused_early
        assert max(elapsed) < 1.0
        assert stub.Encode(pb.EncodeRequest(texts=["recovered"])).dim == 32


def _health(target: str, credentials: grpc.ChannelCredentials | None = None) -> int:
    channel = (
        grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    )
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service="bertdot.v1.Retrieval")).status


def test_health_transitions(tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bertdot.server.app import server as app

    loaded = threading.Event()
    real_load = app._load

    def slow_load(config: ServerConfig) -> object:
        loaded.wait(20)
        return real_load(config)

    monkeypatch.setattr(app, "_load", slow_load)
    thread = ServerThread(ServerConfig(model=tiny_artifact, port=0, device="cpu"))
    try:
        thread.call(thread.server.start(wait_ready=False))
        serving_status = health_pb2.HealthCheckResponse.SERVING
        assert _health(thread.target) == health_pb2.HealthCheckResponse.NOT_SERVING
        with grpc.insecure_channel(thread.target) as channel:
            code = code_of(lambda: pb_grpc.RetrievalStub(channel).Info(pb.InfoRequest()))
            assert code == grpc.StatusCode.UNAVAILABLE
        loaded.set()
        for _ in range(100):
            if _health(thread.target) == serving_status:
                break
            time.sleep(0.1)
        assert _health(thread.target) == serving_status
        thread.server.service.draining = True
        thread.call(thread.server.health.enter_graceful_shutdown())
        assert _health(thread.target) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        thread.close()


def test_bearer_token_required_but_health_open(tiny_artifact: Path) -> None:
    config = ServerConfig(model=tiny_artifact, port=0, device="cpu", token="s3cret")
    with serving(config) as thread, grpc.insecure_channel(thread.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        assert code_of(lambda: stub.Info(pb.InfoRequest())) == grpc.StatusCode.UNAUTHENTICATED
        wrong = [("authorization", "Bearer nope")]
        code = code_of(lambda: stub.Info(pb.InfoRequest(), metadata=wrong))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        stream = stub.EncodeStream(iter([pb.EncodeRequest(texts=["x"])]))
        assert code_of(lambda: list(stream)) == grpc.StatusCode.UNAUTHENTICATED
        right = [("authorization", "Bearer s3cret")]
        assert stub.Info(pb.InfoRequest(), metadata=right).model.dim == 32
        assert _health(thread.target) == health_pb2.HealthCheckResponse.SERVING


def test_tls_with_client_certificates(tiny_artifact: Path, tmp_path: Path) -> None:
    make_certs(tmp_path)
    tls = TLSConfig(tmp_path / "server.pem", tmp_path / "server.key", tmp_path / "ca.pem")
    config = ServerConfig(model=tiny_artifact, port=0, device="cpu", tls=tls)
    with serving(config) as thread:
        target = f"localhost:{thread.server.port}"
        ca = (tmp_path / "ca.pem").read_bytes()
        good = grpc.ssl_channel_credentials(
            ca, (tmp_path / "client.key").read_bytes(), (tmp_path / "client.pem").read_bytes()
        )
        assert _health(target, good) == health_pb2.HealthCheckResponse.SERVING
        with grpc.secure_channel(target, good) as channel:
            assert pb_grpc.RetrievalStub(channel).Info(pb.InfoRequest()).model.dim == 32
        no_client_cert = grpc.ssl_channel_credentials(ca)
        with grpc.secure_channel(target, no_client_cert) as channel:
            code = code_of(lambda: pb_grpc.RetrievalStub(channel).Info(pb.InfoRequest(), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE
        with grpc.insecure_channel(target) as channel:
            code = code_of(lambda: pb_grpc.RetrievalStub(channel).Info(pb.InfoRequest(), timeout=5))
            assert code == grpc.StatusCode.UNAVAILABLE


def test_config_is_frozen(tiny_artifact: Path) -> None:
    config = ServerConfig(model=tiny_artifact)
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
    assert replace(config, port=1).port == 1


def test_status_messages_are_cut_on_a_character_boundary() -> None:
    from bertdot.server.errors import NotFound
    from bertdot.server.rpc.status import MAX_MESSAGE_BYTES, bounded, status_for

    assert bounded("short") == "short"
    cut = bounded("é" * 1000)  # 2,000 bytes
    assert len(cut.encode()) <= MAX_MESSAGE_BYTES and cut.endswith("…") and "\ufffd" not in cut
    code, message = status_for(NotFound("x" * 5000))
    assert code.name == "NOT_FOUND" and len(message.encode()) <= MAX_MESSAGE_BYTES
