"""The committed stubs match the proto, and the messages round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import codegen


@pytest.mark.parametrize("name", codegen.GENERATED)
def test_committed_stubs_are_fresh(tmp_path: Path, name: str) -> None:
    codegen.generate(tmp_path)
    fresh = (tmp_path / name).read_bytes()
    committed = (codegen.PROTO_DIR / name).read_bytes()
    assert fresh == committed, (
        f"{name} is stale against bertdot.proto; regenerate with `python -m bertdot.v1.codegen`"
    )


def test_generated_imports_need_no_post_processing() -> None:
    grpc_stub = (codegen.PROTO_DIR / "bertdot_pb2_grpc.py").read_text()
    assert "from bertdot.v1 import bertdot_pb2" in grpc_stub


def test_search_response_round_trip() -> None:
    msg = pb.SearchResponse(
        id="q1",
        hits=[pb.Hit(id="p7", score=101.5, title="t", text="body")],
        stats=pb.QueryStats(token_count=12, truncated=True),
        timings=pb.Timings(queue_us=3, encode_us=900, total_us=1200, batch_size=4),
        error=pb.Error(code=3, message="empty query"),
    )
    back = pb.SearchResponse.FromString(msg.SerializeToString())
    assert back == msg
    assert back.hits[0].score == pytest.approx(101.5)
    assert back.stats.truncated and back.timings.batch_size == 4
    assert back.HasField("error") and back.error.code == 3


def test_optional_ef_and_candidate_oneof() -> None:
    unset = pb.SearchRequest.FromString(pb.SearchRequest(query="q").SerializeToString())
    assert not unset.HasField("ef")
    zero = pb.SearchRequest.FromString(pb.SearchRequest(query="q", ef=0).SerializeToString())
    assert zero.HasField("ef") and zero.ef == 0

    req = pb.RerankRequest(
        query="q", candidates=[pb.Candidate(text="a"), pb.Candidate(passage_id="p1")], top_k=1
    )
    back = pb.RerankRequest.FromString(req.SerializeToString())
    assert [c.WhichOneof("source") for c in back.candidates] == ["text", "passage_id"]


def test_embedding_values_are_packed() -> None:
    emb = pb.Embedding(values=[0.5] * 768)
    # Packed: one tag + length prefix + 4 bytes per float, not a tag per float.
    assert len(emb.SerializeToString()) == 768 * 4 + 3
