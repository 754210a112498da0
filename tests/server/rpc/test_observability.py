"""What a stranger's tooling sees: the documented metrics after one call of each kind,
refusals counted, and reflection under both the v1 and v1alpha service names."""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from bertdot.server.app.config import ServerConfig
from bertdot.server.encoding.encoder import Encoder
from bertdot.server.indexing.build import build_index
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.support.fakes import make_passages, write_jsonl
from tests.support.serving import ServerThread, serving

TOKEN = "s3cret"
AUTH = [("authorization", f"Bearer {TOKEN}")]
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("observability")
    build_index(
        Encoder(tiny_artifact, device="cpu"),
        write_jsonl(root / "corpus.jsonl", make_passages(60, seed=9)),
        root / "index",
        progress=False,
        say=lambda _: None,
    )
    config = ServerConfig(
        model=tiny_artifact, index=root / "index", port=0, metrics_port=0, device="cpu",
        token=TOKEN, max_message_bytes=LIMIT,
    )  # fmt: skip
    with serving(config) as thread:
        yield thread


def scrape(server: ServerThread) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server.metrics_port}/metrics") as r:
        return str(r.read().decode())


def value(text: str, name: str, **labels: str) -> float:
    """The sample `name{labels}` (labels in any order), 0 when absent."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_every_documented_family_and_label_after_one_call_of_each_kind(
    server: ServerThread,
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        stub.Search(pb.SearchRequest(query="what is a passage"), metadata=AUTH)
        list(stub.SearchStream(iter([pb.SearchRequest(query="a streamed query")]), metadata=AUTH))
        stub.Encode(pb.EncodeRequest(texts=["one", "two texts"]), metadata=AUTH)
        list(stub.EncodeStream(iter([pb.EncodeRequest(texts=["streamed"])]), metadata=AUTH))
        stub.Rerank(
            pb.RerankRequest(query="q", candidates=[pb.Candidate(text="a candidate")]),
            metadata=AUTH,
        )
        stub.Upsert(
            pb.UpsertRequest(passages=[pb.Passage(id="m1", text="new text")]), metadata=AUTH
        )
        stub.Delete(pb.DeleteRequest(ids=["m1"]), metadata=AUTH)
        stub.Info(pb.InfoRequest(), metadata=AUTH)
    text = scrape(server)
    methods = ("Search", "SearchStream", "Encode", "EncodeStream", "Rerank", "Upsert", "Delete",
               "Info")  # fmt: skip
    for method in methods:
        assert value(text, "bertdot_requests_total", method=method, code="OK") >= 1, method
    for method in ("Search", "Encode", "Rerank", "Upsert", "Delete", "Info"):  # unary latency
        assert value(text, "bertdot_request_latency_seconds_count", method=method) >= 1, method
    stages = {
        "Search": ("queue", "tokenize", "encode", "search"),
        "SearchStream": ("queue", "tokenize", "encode", "search"),
        "Encode": ("queue", "encode"),
        "EncodeStream": ("queue", "tokenize", "encode"),
        "Rerank": ("queue", "tokenize", "encode", "search"),
        "Upsert": ("encode", "apply"),
    }
    for method, names in stages.items():
        for stage in names:
            count = value(text, "bertdot_stage_latency_seconds_count", method=method, stage=stage)
            assert count >= 1, (method, stage)
    assert value(text, "bertdot_batch_size_count") >= 1
    for gauge in ("bertdot_queue_depth", "bertdot_index_size"):
        assert re.search(rf"^{gauge} \d", text, re.MULTILINE), gauge
    assert value(text, "bertdot_index_size") == 60


def test_refusals_by_the_token_and_the_size_limit_are_counted(server: ServerThread) -> None:
    before = scrape(server)
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Search(pb.SearchRequest(query="no token"))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as caught:
            stub.Encode(pb.EncodeRequest(texts=["word " * 20_000]), metadata=AUTH)  # 100 KB
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "exceeds the limit of 65,536 (--max-message-bytes)" in caught.value.details()
        stream = stub.EncodeStream(
            iter([pb.EncodeRequest(texts=["word " * 20_000])]), metadata=AUTH
        )
        with pytest.raises(grpc.RpcError) as caught:
            list(stream)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert stub.Encode(pb.EncodeRequest(texts=["still fine"]), metadata=AUTH).dim == 32
    after = scrape(server)

    def grew(method: str, code: str) -> float:
        labels = {"method": method, "code": code}
        return value(after, "bertdot_requests_total", **labels) - value(
            before, "bertdot_requests_total", **labels
        )

    assert grew("Search", "UNAUTHENTICATED") == 1
    assert grew("Encode", "RESOURCE_EXHAUSTED") == 1
    assert grew("EncodeStream", "RESOURCE_EXHAUSTED") == 1


def _list_services(channel: grpc.Channel, service: str) -> set[str]:
    """A reflection client of one version only: the method path names the version."""
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
    return {s.name for s in responses[0].list_services_response.service}


@pytest.mark.parametrize(
    "service", ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]
)
def test_reflection_answers_v1_and_v1alpha_clients_without_the_token(
    server: ServerThread, service: str
) -> None:
    with grpc.insecure_channel(server.target) as channel:  # no token: reflection stays open
        names = _list_services(channel, service)
        assert {"bertdot.v1.Retrieval", "grpc.health.v1.Health", service} <= names
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="bertdot.v1.Retrieval"
        )
        answer = next(iter(call(iter([request]))))
        assert answer.file_descriptor_response.file_descriptor_proto  # the proto itself
