"""Load and overload on `bertdot serve` in a subprocess (so its RSS is its own).

Load: 64 concurrent clients search and write for a bounded time: no errors, every
acknowledged write visible afterwards, bounded memory growth.
Overload: far more concurrent requests than the queue holds: the excess is refused with
RESOURCE_EXHAUSTED at once, the rest is served in bounded time, and the server recovers.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest

from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.reliability.helpers import ServeProcess, build_tiny_index, everything, figures, rss_mib
from tests.support.fakes import make_passages, make_queries

CLIENTS = 64
LOAD_SECONDS = 8.0
POOL = 12  # ids per client: 64 × 12 + the corpus stays under Search's k limit of 1000
BASE = make_passages(100, seed=31, titled=False)
QUERIES = make_queries(BASE, 200, seed=32)


@pytest.fixture(scope="module")
def index_root(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("load")


def _client(
    target: str,
    number: int,
    until: float,
    texts: dict[str, str | None],
    counts: Counter[str],
    errors: list[str],
    lock: threading.Lock,
) -> None:
    rng = random.Random(number)
    pool = [f"c{number}-{i}" for i in range(POOL)]
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        while time.monotonic() < until:
            roll = rng.random()
            try:
                if roll < 0.75:
                    hits = stub.Search(pb.SearchRequest(query=rng.choice(QUERIES)), timeout=30).hits
                    if len(hits) != 10:  # a write in the middle of a search must not cut it
                        with lock:
                            errors.append(f"a search answered {len(hits)} hits, not 10")
                    kind, written = "search", {}
                elif roll < 0.95:
                    ids = rng.sample(pool, rng.randint(1, 3))
                    written = {i: f"{i} {rng.getrandbits(32)} {rng.choice(QUERIES)}" for i in ids}
                    passages = [pb.Passage(id=i, text=t or "") for i, t in written.items()]
                    stub.Upsert(pb.UpsertRequest(passages=passages), timeout=30)
                    kind = "upsert"
                else:
                    written = {rng.choice(pool): None}
                    stub.Delete(pb.DeleteRequest(ids=list(written)), timeout=30)
                    kind = "delete"
            except grpc.RpcError as err:
                with lock:
                    errors.append(f"{err.code().name}: {err.details()}")
                continue
            with lock:
                counts[kind] += 1
                texts.update(written)  # one writer per id: acknowledgements are in order


@pytest.mark.slow
def test_64_clients_search_and_write_without_errors_or_memory_growth(
    tiny_artifact: Path, index_root: Path
) -> None:
    index = build_tiny_index(tiny_artifact, index_root / "steady", BASE)
    serve = ["--model", str(tiny_artifact), "--index", str(index), "--device", "cpu"]
    texts: dict[str, str | None] = {p.id: p.text for p in BASE}
    counts: Counter[str] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    with ServeProcess(*serve, "--snapshot-interval", "2") as server:
        warm_until = time.monotonic() + 1.0  # first calls allocate: measure RSS after them
        _client(server.target, -1, warm_until, texts, Counter(), errors, lock)
        rss_start = rss_mib(server.pid)
        until = time.monotonic() + LOAD_SECONDS
        threads = [
            threading.Thread(
                target=_client, args=(server.target, n, until, texts, counts, errors, lock)
            )
            for n in range(CLIENTS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(LOAD_SECONDS + 60)
        rss_end = rss_mib(server.pid)
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.RetrievalStub(channel)
            found = everything(stub)
            size = stub.Info(pb.InfoRequest()).index.size
        assert server.stop() == 0
    lost = sum((found[i].text if i in found else None) != t for i, t in texts.items())
    requests = sum(counts.values())
    figures(
        "load",
        clients=CLIENTS,
        seconds=LOAD_SECONDS,
        requests=requests,
        searches=counts["search"],
        upserts=counts["upsert"],
        deletes=counts["delete"],
        errors=len(errors),
        writes_lost=lost,
        rss_start_mib=round(rss_start),
        rss_end_mib=round(rss_end),
    )
    assert not errors, errors[:5]
    assert lost == 0 and size == len(found) == sum(t is not None for t in texts.values())
    assert requests > 1000 and counts["upsert"] > 100
    assert rss_end - rss_start < 100, f"RSS grew from {rss_start:.0f} to {rss_end:.0f} MiB"


async def _burst(
    target: str, n: int, query: str, invalid: bool = False
) -> list[tuple[grpc.StatusCode, float]]:
    """`n` requests at once from one asyncio channel: searches with every tenth an upsert, or
    (`invalid`) searches that validation refuses, to measure what the burst alone costs."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.RetrievalStub(channel)

        async def one(i: int) -> tuple[grpc.StatusCode, float]:
            started = time.perf_counter()
            try:
                if invalid:
                    await stub.Search(pb.SearchRequest(query=query, k=5000), timeout=30)
                elif i % 10 == 9:
                    passage = pb.Passage(id=f"o{i}", text=f"burst write {i}")
                    await stub.Upsert(pb.UpsertRequest(passages=[passage]), timeout=30)
                else:
                    await stub.Search(pb.SearchRequest(query=f"{i} {query}"), timeout=30)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as err:
                code = err.code()
            return code, time.perf_counter() - started

        return await asyncio.gather(*(one(i) for i in range(n)))


def _ms(seconds: np.ndarray, q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 1)


@pytest.mark.slow
def test_overload_is_refused_at_once_served_in_bounded_time_and_recovers(
    tiny_artifact: Path, index_root: Path
) -> None:
    index = build_tiny_index(tiny_artifact, index_root / "overload", BASE)
    serve = ["--model", str(tiny_artifact), "--index", str(index), "--device", "cpu"]
    burst, queue = 400, 8
    query = " ".join(QUERIES * 3)[:4000]  # long queries: encoding is the bottleneck
    with ServeProcess(*serve, "--max-queue", str(queue), "--max-batch-size", "4") as server:
        floor = asyncio.run(_burst(server.target, burst, query, invalid=True))
        assert {code for code, _ in floor} == {grpc.StatusCode.INVALID_ARGUMENT}
        results = asyncio.run(_burst(server.target, burst, query))
        codes = Counter(code for code, _ in results)
        served = np.array([s for c, s in results if c == grpc.StatusCode.OK])
        refused = np.array([s for c, s in results if c == grpc.StatusCode.RESOURCE_EXHAUSTED])
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.RetrievalStub(channel)
            after = []
            for q in QUERIES[:20]:
                started = time.perf_counter()
                assert len(stub.Search(pb.SearchRequest(query=q), timeout=10).hits) == 10
                after.append(time.perf_counter() - started)
            found = everything(stub)
        assert server.stop() == 0
    written = {f"o{i}" for i, (c, _) in enumerate(results) if i % 10 == 9 and c.name == "OK"}
    figures(
        "overload",
        concurrent_requests=burst,
        queue_bound=queue,
        served=len(served),
        refused=len(refused),
        refused_p50_p95_ms=(_ms(refused, 50), _ms(refused, 95)),
        same_burst_refused_by_validation_p50_p95_ms=(
            _ms(np.array([s for _, s in floor]), 50),
            _ms(np.array([s for _, s in floor]), 95),
        ),
        served_p50_p99_ms=(_ms(served, 50), _ms(served, 99)),
        recovered_max_ms=round(max(after) * 1000, 1),
        writes_lost=len(written - set(found)),
    )
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
    assert len(refused) >= burst // 2 and len(served) >= queue
    assert np.median(refused) < np.median(served)  # refusal does not wait for the queue
    assert float(np.percentile(refused, 95)) < 1.0  # the burst itself costs ~0.1-0.3 s here
    assert float(served.max()) < 5.0
    assert max(after) < 0.5  # recovered: the queue drained, single requests are fast again
    assert written <= set(found)  # every acknowledged write of the burst is there
