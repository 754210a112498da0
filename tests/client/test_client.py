"""The sync and asyncio clients against a real gRPC channel to a fake server."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from bertdot.client import (
    AsyncClient,
    BertdotError,
    Client,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Passage,
    PassageRef,
    Query,
    ResourceExhausted,
    SearchResult,
    Unavailable,
)
from bertdot.client.channel import ChannelConfig, service_config
from bertdot.client.errors import from_status
from tests.support import fake_server
from tests.support.certs import make_certs
from tests.support.fake_server import FakeRetrieval


@pytest.fixture
def served() -> Iterator[tuple[str, FakeRetrieval]]:
    server, port, servicer = fake_server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


@pytest.fixture
def client(served: tuple[str, FakeRetrieval]) -> Iterator[Client]:
    with Client(served[0], timeout=5, token="s3cret", initial_backoff_s=0.01) as c:
        yield c


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def aclient(target: str, **kwargs: Any) -> AsyncClient:
    return AsyncClient(target, timeout=5, token="s3cret", initial_backoff_s=0.01, **kwargs)


# ------------------------------------------------------------------ unary ----


def test_search(client: Client, served: tuple[str, FakeRetrieval]) -> None:
    result = client.search("what is dense retrieval", k=3, ef=77, return_text=True)
    assert [h.id for h in result.hits] == ["p0", "p1", "p2"]
    assert result.hits[0].score == len("what is dense retrieval")
    assert result.hits[1].text == "text 1" and result.hits[1].title == "title 1"
    assert result.token_count == 6 and not result.truncated
    assert result.timings.encode_us == 77  # the fake echoes ef here: it reached the wire
    assert len(client.search("q").hits) == 10  # default k
    assert served[1].metadata["Search"]["authorization"] == "Bearer s3cret"


def test_search_async(served: tuple[str, FakeRetrieval]) -> None:
    async def main() -> SearchResult:
        async with aclient(served[0]) as c:
            return await c.search("hello", k=2)

    result = run(main())
    assert [h.id for h in result.hits] == ["p0", "p1"]
    assert served[1].metadata["Search"]["authorization"] == "Bearer s3cret"


def test_no_token_sends_no_authorization(served: tuple[str, FakeRetrieval]) -> None:
    with Client(served[0]) as c:
        c.info()
    assert "authorization" not in served[1].metadata["Info"]


def test_encode_rerank_info_health(client: Client, served: tuple[str, FakeRetrieval]) -> None:
    enc = client.encode(["short", "a text longer than twenty chars"])
    assert enc.embeddings.dtype == np.float32 and enc.embeddings.shape == (2, 4)
    np.testing.assert_array_equal(enc.embeddings[:, 1], [0, 1])
    assert enc.dim == 4 and enc.truncated == (False, True)

    served[1].store["d1"] = fake_server.pb.Passage(id="d1", text="dense vectors")
    rr = client.rerank("dense vectors", ["nothing", PassageRef("d1"), "dense"], return_text=True)
    assert [(s.index, s.passage_id) for s in rr.results] == [(1, "d1"), (2, ""), (0, "")]
    assert rr.results[0].score == 2 and rr.results[0].text == "dense vectors"
    assert rr.candidates_encoded == 2
    assert len(client.rerank("q", ["a", "b", "c"], top_k=1).results) == 1
    with pytest.raises(NotFound, match="unknown passage"):
        client.rerank("q", [PassageRef("missing")])

    info = client.info()
    assert info.model.dim == 4 and info.model.similarity == "dot"
    assert info.index is not None and info.index.default_ef == 64
    assert info.server_version == "fake-1"
    assert client.health() == "SERVING"


def test_encode_rerank_info_health_async(served: tuple[str, FakeRetrieval]) -> None:
    async def main() -> tuple[Any, ...]:
        async with aclient(served[0]) as c:
            return (
                await c.encode(["a", "bb"]),
                await c.rerank("x y", ["x", "x y"]),
                await c.info(),
                await c.health(),
            )

    enc, rr, info, health = run(main())
    np.testing.assert_array_equal(enc.embeddings[:, 0], [1, 2])
    assert [s.index for s in rr.results] == [1, 0]
    assert info.model.pooling == "cls" and health == "SERVING"


def test_upsert_and_delete(client: Client, served: tuple[str, FakeRetrieval]) -> None:
    up = client.upsert([Passage("a", "alpha", title="A"), {"id": "b", "text": "beta"}])
    assert up.upserted == 2 and served[1].store["a"].title == "A"
    gone = client.delete(["a", "zzz"])
    assert gone.deleted == 1 and gone.not_found == ("zzz",)
    served[1].read_only = True
    with pytest.raises(FailedPrecondition) as info:
        client.upsert([Passage("c", "gamma")])
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert info.value.details == "read-only index"


def test_upsert_and_delete_async(served: tuple[str, FakeRetrieval]) -> None:
    async def main() -> tuple[Any, Any]:
        async with aclient(served[0]) as c:
            return await c.upsert([Passage("a", "alpha")]), await c.delete(["a"])

    up, gone = run(main())
    assert up.upserted == 1 and gone.deleted == 1 and not served[1].store


# --------------------------------------------------- errors and retries ----


def test_invalid_argument_is_typed_and_not_retried(
    client: Client, served: tuple[str, FakeRetrieval]
) -> None:
    with pytest.raises(InvalidArgument) as info:
        client.search("")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details == "empty query"
    assert isinstance(info.value, BertdotError)
    assert served[1].calls["Search"] == 1


@pytest.mark.parametrize("method", ["Search", "Encode", "Rerank", "Info"])
def test_reads_retry_on_unavailable(
    client: Client, served: tuple[str, FakeRetrieval], method: str
) -> None:
    served[1].fail_unavailable[method] = 2
    call = {
        "Search": lambda: client.search("q"),
        "Encode": lambda: client.encode(["q"]),
        "Rerank": lambda: client.rerank("q", ["a"]),
        "Info": client.info,
    }[method]
    call()
    assert served[1].calls[method] == 3


def test_retries_give_up_after_max_attempts(served: tuple[str, FakeRetrieval]) -> None:
    served[1].fail_unavailable["Search"] = 100
    with Client(served[0], max_attempts=3, initial_backoff_s=0.01) as c, pytest.raises(Unavailable):
        c.search("q")
    assert served[1].calls["Search"] == 3


def test_no_retries_when_disabled(served: tuple[str, FakeRetrieval]) -> None:
    served[1].fail_unavailable["Search"] = 1
    with Client(served[0], max_attempts=1) as c, pytest.raises(Unavailable):
        c.search("q")
    assert served[1].calls["Search"] == 1


@pytest.mark.parametrize("method", ["Upsert", "Delete"])
def test_writes_are_never_retried(
    client: Client, served: tuple[str, FakeRetrieval], method: str
) -> None:
    served[1].fail_unavailable[method] = 1
    with pytest.raises(Unavailable, match="warming up"):
        client.upsert([Passage("a", "x")]) if method == "Upsert" else client.delete(["a"])
    assert served[1].calls[method] == 1


def test_async_retry_and_typed_errors(served: tuple[str, FakeRetrieval]) -> None:
    served[1].fail_unavailable["Search"] = 2
    served[1].fail_unavailable["Upsert"] = 1

    async def main() -> None:
        async with aclient(served[0]) as c:
            await c.search("q")
            with pytest.raises(Unavailable):
                await c.upsert([Passage("a", "x")])
            with pytest.raises(InvalidArgument):
                await c.search("")
            with pytest.raises(DeadlineExceeded):
                await c.search("slow", timeout=0.1)

    run(main())
    assert served[1].calls["Search"] == 5  # 3 attempts, the empty query once, the slow one once
    assert served[1].calls["Upsert"] == 1


def test_deadline_exceeded(client: Client, served: tuple[str, FakeRetrieval]) -> None:
    with pytest.raises(DeadlineExceeded) as info:
        client.search("slow", timeout=0.1)
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_unreachable_server_is_unavailable() -> None:
    with Client("127.0.0.1:1", timeout=5, max_attempts=2) as c, pytest.raises(Unavailable):
        c.info()


def test_stream_item_error_codes() -> None:
    assert isinstance(from_status(8, "queue full", query_id="q"), ResourceExhausted)
    odd = from_status(99, "?")
    assert type(odd) is BertdotError and odd.code == grpc.StatusCode.UNKNOWN
    assert "query 'q'" in str(from_status(3, "bad", query_id="q"))


# ------------------------------------------------------------------ channel ----


def test_service_config_retries_reads_only() -> None:
    config = json.loads(service_config(ChannelConfig(max_attempts=9)))
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method_config,) = config["methodConfig"]
    names = {n["method"] for n in method_config["name"]}
    assert names == {"Search", "Encode", "Rerank", "Info", "Check"}
    assert method_config["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert method_config["retryPolicy"]["maxAttempts"] == 5
    assert "methodConfig" not in json.loads(service_config(ChannelConfig(max_attempts=1)))


def test_round_robin_spreads_calls_over_replicas() -> None:
    (s1, p1, f1), (s2, p2, f2) = fake_server.start(), fake_server.start()
    try:
        with Client(f"ipv4:127.0.0.1:{p1},127.0.0.1:{p2}", timeout=5) as c:
            for _ in range(20):
                c.info()
        assert f1.calls["Info"] > 0 and f2.calls["Info"] > 0
        assert f1.calls["Info"] + f2.calls["Info"] == 20
    finally:
        s1.stop(None)
        s2.stop(None)


def test_dns_target(served: tuple[str, FakeRetrieval]) -> None:
    port = served[0].rsplit(":", 1)[1]
    with Client(f"dns:///localhost:{port}", timeout=5) as c:
        assert c.health() == "SERVING"


@pytest.mark.skipif(not Path("/usr/bin/openssl").exists(), reason="needs the openssl CLI")
def test_tls_with_bearer_token(tmp_path: Path) -> None:
    make_certs(tmp_path)
    servicer = FakeRetrieval()
    server = grpc.server(fake_server.futures.ThreadPoolExecutor(max_workers=4))
    fake_server.pb_grpc.add_RetrievalServicer_to_server(servicer, server)
    creds = grpc.ssl_server_credentials(
        [((tmp_path / "server.key").read_bytes(), (tmp_path / "server.pem").read_bytes())]
    )
    port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    try:
        ca = tmp_path / "ca.pem"
        with Client(f"localhost:{port}", tls=True, root_certificates=ca, token="t0k") as c:
            assert c.info().server_version == "fake-1"
        assert servicer.metadata["Info"]["authorization"] == "Bearer t0k"

        async def main() -> str:
            async with AsyncClient(
                f"localhost:{port}", tls=True, root_certificates=ca.read_bytes()
            ) as c:
                return (await c.info()).server_version

        assert run(main()) == "fake-1"
    finally:
        server.stop(None)


# ---------------------------------------------------------------- streams ----


QUERIES = ["one", "two words", "three little words", "four", "five five"]


def test_search_many_keeps_input_order(client: Client, served: tuple[str, FakeRetrieval]) -> None:
    queries: list[str | Query] = [*QUERIES, Query("mine", id="custom", k=1)]
    results = client.search_many(queries * 20, k=2, max_in_flight=16)
    assert len(results) == 120
    for i, result in enumerate(results):
        assert isinstance(result, SearchResult)
        text = (queries * 20)[i]
        expected_id = "custom" if isinstance(text, Query) else str(i)
        assert result.id == expected_id
        length = len(text.text if isinstance(text, Query) else text)
        assert result.hits[0].score == length
        assert len(result.hits) == (1 if isinstance(text, Query) else 2)
    assert served[1].metadata["SearchStream"]["authorization"] == "Bearer s3cret"


def test_search_many_item_errors(client: Client) -> None:
    results = client.search_many(["a", "", "c"], return_exceptions=True)
    assert isinstance(results[1], InvalidArgument) and results[1].query_id == "1"
    assert [r.id for r in results if isinstance(r, SearchResult)] == ["0", "2"]
    with pytest.raises(InvalidArgument, match="empty query"):
        client.search_many(["a", "", "c"])


def test_search_many_async(served: tuple[str, FakeRetrieval]) -> None:
    async def main() -> list[Any]:
        async with aclient(served[0]) as c:
            return await c.search_many(QUERIES * 10 + [""], max_in_flight=4, return_exceptions=True)

    results = run(main())
    assert [r.hits[0].score for r in results[:5]] == [len(q) for q in QUERIES]
    assert [r.id for r in results[:-1]] == [str(i) for i in range(50)]
    assert isinstance(results[-1], InvalidArgument) and results[-1].query_id == "50"
    assert served[1].metadata["SearchStream"]["authorization"] == "Bearer s3cret"


class Producer:
    """Counts how far the client has pulled from a query source."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.produced = 0

    def __iter__(self) -> Iterator[str]:
        for i in range(self.n):
            self.produced += 1
            yield f"query {i}"

    async def __aiter__(self) -> AsyncIterator[str]:
        for q in self:
            yield q


def test_search_stream_back_pressure(client: Client, served: tuple[str, FakeRetrieval]) -> None:
    producer, limit, seen = Producer(10_000), 8, set()
    for result in client.search_stream(producer, k=1, max_in_flight=limit):
        assert isinstance(result, SearchResult)
        seen.add(result.id)
        # The source is pulled lazily: at most `limit` unanswered plus one being admitted.
        assert producer.produced <= len(seen) + limit + 1
    assert seen == {str(i) for i in range(10_000)}
    assert 1 <= served[1].max_in_flight <= limit


def test_search_stream_back_pressure_async(served: tuple[str, FakeRetrieval]) -> None:
    producer, limit = Producer(10_000), 8

    async def main() -> set[str]:
        seen = set()
        async with aclient(served[0]) as c:
            async for result in c.search_stream(producer, k=1, max_in_flight=limit):
                assert isinstance(result, SearchResult)
                seen.add(result.id)
                assert producer.produced <= len(seen) + limit + 1
        return seen

    assert run(main()) == {str(i) for i in range(10_000)}
    assert 1 <= served[1].max_in_flight <= limit


def test_in_flight_measure_detects_flooding(
    client: Client, served: tuple[str, FakeRetrieval]
) -> None:
    """Guard for the two tests above: without a tight bound the fake sees a flood."""
    served[1].answer_delay_s = 0.001
    list(client.search_stream(Producer(300), k=1, max_in_flight=10_000))
    assert served[1].max_in_flight > 50


def test_search_stream_ids_are_caller_ids_or_positions(client: Client) -> None:
    results = client.search_stream([Query("a", id="x"), "b", "c"])
    ids = [r.id for r in results if isinstance(r, SearchResult)]
    assert sorted(ids) == ["1", "2", "x"]


def test_search_stream_producer_error_propagates(client: Client) -> None:
    def broken() -> Iterator[str]:
        yield "fine"
        raise KeyError("source broke")

    with pytest.raises(KeyError, match="source broke"):
        list(client.search_stream(broken()))

    async def abroken() -> AsyncIterator[str]:
        yield "fine"
        raise KeyError("async source broke")

    async def main() -> None:
        async with aclient(client.config.target) as c:
            async for _ in c.search_stream(abroken()):
                pass

    with pytest.raises(KeyError, match="async source broke"):
        run(main())


def test_search_stream_deadline(client: Client, served: tuple[str, FakeRetrieval]) -> None:
    served[1].slow_s = 2.0
    with pytest.raises(DeadlineExceeded):
        list(client.search_stream(["a", "slow"], timeout=0.3))

    async def main() -> None:
        async with aclient(served[0]) as c:
            async for _ in c.search_stream(["a", "slow"], timeout=0.3):
                pass

    with pytest.raises(DeadlineExceeded):
        run(main())


def test_stream_stops_when_consumer_breaks(client: Client) -> None:
    producer = Producer(100_000)
    for _ in client.search_stream(producer, max_in_flight=4):
        break
    assert producer.produced < 10


class PeerCounting(FakeRetrieval):
    """Counts searches by the client's address and port: one peer per TCP connection."""

    def __init__(self) -> None:
        super().__init__()
        self.peers: Counter[str] = Counter()

    def Search(self, request: Any, context: grpc.ServicerContext) -> Any:
        with self.lock:
            self.peers[context.peer()] += 1
        return super().Search(request, context)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_connections_spread_calls_round_robin(kind: str) -> None:
    server, port, servicer = fake_server.start(PeerCounting())
    target = f"127.0.0.1:{port}"
    try:
        if kind == "sync":
            with Client(target, connections=3) as client:
                for _ in range(30):
                    client.search("q")
        else:

            async def go() -> None:
                async with aclient(target, connections=3) as client:
                    for _ in range(30):
                        await client.search("q")

            run(go())
        assert sorted(servicer.peers.values()) == [10, 10, 10]  # 3 connections, in turn
    finally:
        server.stop(None)


def test_zero_connections_is_refused(served: tuple[str, FakeRetrieval]) -> None:
    with pytest.raises(ValueError, match="connections must be at least 1"):
        Client(served[0], connections=0)
