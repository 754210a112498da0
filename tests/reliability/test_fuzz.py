"""Fuzz: hypothesis generates request fields (adversarial unicode, control characters, empty
and huge strings, extreme k and ef) and raw request bytes (truncated, corrupted, with
unknown fields). The server answers each with the status code the contract gives it,
never crashes, and serves the next valid request."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertdot.server.app.config import ServerConfig
from bertdot.server.engine.validation import MAX_ID_CHARS, Limits
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.reliability.helpers import build_tiny_index, figures, status_of
from tests.support.fakes import make_passages
from tests.support.serving import ServerThread, serving

OK, INVALID, NOT_FOUND = (
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
)
LIMITS = Limits()
EXAMPLES = 200  # per hypothesis test
TRIED: Counter[str] = Counter()  # inputs tried, by RPC
CODES: Counter[str] = Counter()  # answers, by status code

NASTY = st.sampled_from(
    [
        "",
        " ",
        "\t\n\r\x0b\x0c",
        "\x00",
        "a\x00b",
        "\x1c\x1d\x1e\x1f",  # str.strip() removes these: "empty" to Python
        "\u200b\u200b",  # zero-width spaces: not whitespace to Python
        "\ufeff",
        "\u202eevil\u202c",
        "e\u0301" * 40,
        "🙂" * 300,
        "\U0010ffff",
        "ǅ ß ﬁ İ",
        "<script>alert(1)</script>",
        "' OR 1=1; DROP TABLE passages; --",
    ]
)
HUGE = st.sampled_from([8192, 8193, 100_000, 100_001]).map(lambda n: ("dense retrieval " * n)[:n])
TEXT = st.one_of(st.text(max_size=64), NASTY, HUGE)
SHORT = st.one_of(st.text(max_size=16), NASTY, st.just("p1"), st.just("i" * (MAX_ID_CHARS + 1)))
UINT = st.one_of(
    st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 1000, 1001, 4096, 4097, 2**32 - 1])
)


def _passage() -> st.SearchStrategy[pb.Passage]:
    return st.builds(pb.Passage, id=SHORT, title=st.one_of(st.just(""), TEXT), text=TEXT)


def _candidate() -> st.SearchStrategy[pb.Candidate]:
    return st.one_of(st.builds(pb.Candidate, text=TEXT), st.builds(pb.Candidate, passage_id=SHORT))


REQUESTS: st.SearchStrategy[tuple[str, Message]] = st.one_of(
    st.tuples(
        st.just("Search"),
        st.builds(
            pb.SearchRequest,
            id=SHORT,
            query=TEXT,
            k=UINT,
            ef=st.one_of(st.none(), UINT),
            return_text=st.booleans(),
        ),
    ),
    st.tuples(
        st.just("Encode"),
        st.builds(
            pb.EncodeRequest,
            texts=st.one_of(st.lists(TEXT, max_size=4), st.just(["t"] * (LIMITS.max_texts + 1))),
        ),
    ),
    st.tuples(
        st.just("Rerank"),
        st.builds(
            pb.RerankRequest,
            query=TEXT,
            candidates=st.lists(_candidate(), max_size=4),
            top_k=UINT,
            return_text=st.booleans(),
        ),
    ),
    st.tuples(
        st.just("Upsert"), st.builds(pb.UpsertRequest, passages=st.lists(_passage(), max_size=4))
    ),
    st.tuples(st.just("Delete"), st.builds(pb.DeleteRequest, ids=st.lists(SHORT, max_size=4))),
    st.tuples(st.just("Info"), st.just(pb.InfoRequest())),
)

# -- the contract, as an oracle --------------------------------------------------------------


def _text_ok(text: str, limit: int) -> bool:
    return bool(text.strip()) and len(text) <= limit


def _id_ok(pid: str) -> bool:
    return bool(pid.strip()) and len(pid) <= MAX_ID_CHARS


def expected(method: str, request: Any, present: set[str]) -> grpc.StatusCode:
    """The status the contract gives `request` (`present`: the ids the index holds)."""
    if method == "Search":
        ef_ok = not request.HasField("ef") or 1 <= request.ef <= LIMITS.max_ef
        valid = _text_ok(request.query, LIMITS.max_query_chars) and request.k <= LIMITS.max_k
        return OK if valid and ef_ok else INVALID
    if method == "Encode":
        texts = list(request.texts)
        valid = 0 < len(texts) <= LIMITS.max_texts
        return OK if valid and all(_text_ok(t, LIMITS.max_text_chars) for t in texts) else INVALID
    if method == "Rerank":
        by_text = [c.text for c in request.candidates if c.WhichOneof("source") != "passage_id"]
        valid = _text_ok(request.query, LIMITS.max_query_chars) and (
            0 < len(request.candidates) <= LIMITS.max_candidates
        )
        if not valid or not all(_text_ok(t, LIMITS.max_text_chars) for t in by_text):
            return INVALID
        by_id = [c.passage_id for c in request.candidates if c.WhichOneof("source") == "passage_id"]
        if not all(_id_ok(pid) for pid in by_id):  # validated like write ids
            return INVALID
        return OK if set(by_id) <= present else NOT_FOUND
    if method == "Upsert":
        passages = list(request.passages)
        ids = [p.id for p in passages]
        valid = 0 < len(passages) <= LIMITS.max_texts and len(set(ids)) == len(ids)
        fields_ok = all(
            _id_ok(p.id)
            and _text_ok(p.text, LIMITS.max_text_chars)
            and len(p.title) <= LIMITS.max_text_chars
            for p in passages
        )
        return OK if valid and fields_ok else INVALID
    if method == "Delete":
        ids = list(request.ids)
        valid = 0 < len(ids) <= LIMITS.max_candidates and len(set(ids)) == len(ids)
        return OK if valid and all(_id_ok(i) for i in ids) else INVALID
    return OK  # Info


def apply(method: str, request: Any, present: set[str]) -> None:
    """Mirror an accepted write in `present`."""
    if method == "Upsert":
        present.update(p.id for p in request.passages)
    elif method == "Delete":
        present.difference_update(request.ids)


# -- the server ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("fuzz")
    index = build_tiny_index(tiny_artifact, root, make_passages(50, seed=9))
    config = ServerConfig(model=tiny_artifact, index=index, port=0, device="cpu")
    with serving(config) as thread:
        yield thread
    figures(
        "fuzz",
        inputs_tried=sum(TRIED.values()),
        by_rpc=dict(TRIED),
        answers=dict(CODES),
    )


@pytest.fixture(scope="module")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as chan:
        yield chan


@pytest.fixture(scope="module")
def present() -> set[str]:
    return {f"p{i}" for i in range(50)}


def _call(channel: grpc.Channel, method: str, raw: bytes) -> grpc.StatusCode:
    """Send raw request bytes; the answer's bytes are not parsed either."""
    call = channel.unary_unary(f"/bertdot.v1.Retrieval/{method}")
    return status_of(lambda: call(raw, timeout=30))


def _still_serving(channel: grpc.Channel) -> None:
    stub = pb_grpc.RetrievalStub(channel)
    assert len(stub.Search(pb.SearchRequest(query="still there?", k=3), timeout=30).hits) == 3


SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow
@SETTINGS
@given(case=REQUESTS)
def test_fuzzed_fields_get_the_contracts_status(
    channel: grpc.Channel, present: set[str], case: tuple[str, Message]
) -> None:
    method, request = case
    want = expected(method, request, present)
    got = _call(channel, method, request.SerializeToString())
    TRIED[method] += 1
    CODES[got.name] += 1
    assert got == want, f"{method} {request!r:.300}"
    if got == OK:
        apply(method, request, present)
    _still_serving(channel)


UNKNOWN_FIELDS = st.sampled_from(
    [b"\x98\x06\x01", b"\xfa\x3f\x03abc", b"\x8d\x7f\x00\x00\x80\x3f"]  # varint, bytes, fixed32
)


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    method, request = draw(REQUESTS)
    raw = request.SerializeToString()
    how = draw(st.sampled_from(["truncate", "flip", "unknown", "garbage", "bad-utf8"]))
    if how == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif how == "flip" and raw:
        at = draw(st.integers(0, len(raw) - 1))
        raw = raw[:at] + bytes([raw[at] ^ draw(st.integers(1, 255))]) + raw[at + 1 :]
    elif how == "unknown":
        raw += draw(UNKNOWN_FIELDS)
    elif how == "garbage":
        raw = draw(st.binary(max_size=64))
    elif how == "bad-utf8":  # field 1 or 2 (a string in every request but Info) as bad UTF-8
        raw = draw(st.sampled_from([b"\x0a", b"\x12"])) + b"\x02\xff\xfe" + raw
    return method, raw


@pytest.mark.slow
@SETTINGS
@given(case=raw_requests())
def test_raw_truncated_and_corrupt_messages_are_invalid_arguments(
    channel: grpc.Channel, present: set[str], case: tuple[str, bytes]
) -> None:
    method, raw = case
    request_type = getattr(pb, f"{method}Request")
    try:
        parsed = request_type.FromString(raw)
    except DecodeError:
        want = INVALID
    else:
        want = expected(method, parsed, present)
    got = _call(channel, method, raw)
    TRIED[f"{method} (raw)"] += 1
    CODES[got.name] += 1
    assert got == want, f"{method} {raw[:200]!r}"
    if got == OK:
        apply(method, parsed, present)
    _still_serving(channel)


def test_a_corrupt_frame_in_a_stream_ends_it_with_invalid_argument(
    channel: grpc.Channel,
) -> None:
    stream = channel.stream_stream("/bertdot.v1.Retrieval/SearchStream")
    good = pb.SearchRequest(id="a", query="fine query").SerializeToString()
    with pytest.raises(grpc.RpcError) as caught:
        list(stream(iter([good, b"\x12\x05ab"]), timeout=30))
    assert caught.value.code() == INVALID
    assert "not a valid protobuf message" in caught.value.details()
    TRIED["SearchStream (raw)"] += 1
    _still_serving(channel)


def test_the_server_is_healthy_after_the_fuzzing(server: ServerThread) -> None:
    with grpc.insecure_channel(server.target) as chan:
        health = health_pb2_grpc.HealthStub(chan)
        status = health.Check(health_pb2.HealthCheckRequest(service="bertdot.v1.Retrieval"))
        assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert "INTERNAL" not in CODES and "UNKNOWN" not in CODES
