"""The micro-batcher on its own: concurrent queries share encoder calls within the bounds,
a lone query does not wait for company, and dead requests cost no compute."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bertdot.server.encoding.tokenization import TokenizedText
from bertdot.server.engine.query_batcher import QueryBatcher, split_by_tokens
from bertdot.server.errors import DeadlineExpired, Overloaded


class SlowEncoder:
    """Tokens = words; each call takes `delay_s` and records its batch (rows, padded length).
    The vector of a text is its word count in every dimension, so answers can be checked."""

    dim = 4

    def __init__(self, delay_s: float = 0.02) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[int, int]] = []
        self._lock = threading.Lock()

    def tokenize(self, texts: Sequence[str]) -> list[TokenizedText]:
        return [TokenizedText(np.arange(len(t.split()), dtype=np.int64), False) for t in texts]

    def encode_tokenized(self, items: Sequence[TokenizedText]) -> np.ndarray:
        time.sleep(self.delay_s)
        with self._lock:
            self.calls.append((len(items), max(item.length for item in items)))
        return np.array([[float(item.length)] * self.dim for item in items], dtype=np.float32)


def run(coro_fn, encoder: SlowEncoder, **options):  # type: ignore[no-untyped-def]
    async def main():  # type: ignore[no-untyped-def]
        with ThreadPoolExecutor(1, thread_name_prefix="encoder") as pool:
            batcher = QueryBatcher(encoder, pool, **options)  # type: ignore[arg-type]
            batcher.start()
            try:
                return await coro_fn(batcher)
            finally:
                await batcher.stop()

    return asyncio.run(main())


def test_concurrent_queries_share_encoder_calls_within_the_batch_size() -> None:
    encoder = SlowEncoder()
    texts = [" ".join(["word"] * (1 + n % 7)) for n in range(40)]

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(batcher.encode(t) for t in texts))

    answers = run(go, encoder, max_batch_size=16)
    assert [a.vector[0] for a in answers] == [len(t.split()) for t in texts]  # right answer each
    assert sum(rows for rows, _ in encoder.calls) == 40
    assert len(encoder.calls) <= 4  # 40 queries in a handful of calls, not 40
    assert max(rows for rows, _ in encoder.calls) == 16  # full batches, never beyond the bound
    assert max(a.batch_size for a in answers) == 16


def test_a_lone_query_does_not_wait_for_company() -> None:
    encoder = SlowEncoder(delay_s=0.0)

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        await batcher.encode("warm up")
        return [await batcher.encode("one query alone") for _ in range(20)]

    answers = run(go, encoder)  # default max_wait_us
    assert all(a.batch_size == 1 for a in answers)
    assert np.median([a.queue_us for a in answers]) < 500  # no 1 ms wait for a batch to fill


def test_max_wait_holds_a_batch_open_when_asked() -> None:
    encoder = SlowEncoder(delay_s=0.0)

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        first = asyncio.ensure_future(batcher.encode("early"))
        await asyncio.sleep(0.005)
        second = asyncio.ensure_future(batcher.encode("late comer"))
        return await asyncio.gather(first, second)

    answers = run(go, encoder, max_wait_us=50_000)
    assert [a.batch_size for a in answers] == [2, 2]
    assert answers[0].queue_us >= 40_000


def test_token_budget_splits_a_batch_into_calls() -> None:
    encoder = SlowEncoder(delay_s=0.0)
    texts = [" ".join(["w"] * 10)] * 8  # 8 texts × 10 tokens = 80 padded tokens

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        return await asyncio.gather(*(batcher.encode(t) for t in texts))

    run(go, encoder, max_batch_size=8, max_batch_tokens=30)
    assert all(rows * longest <= 30 for rows, longest in encoder.calls)
    assert sum(rows for rows, _ in encoder.calls) == 8


def test_a_lone_querys_follow_up_runs_in_the_encoder_thread() -> None:
    encoder = SlowEncoder(delay_s=0.0)
    threads: list[str] = []

    def follow_up(vector: np.ndarray) -> float:
        threads.append(threading.current_thread().name)
        time.sleep(0.002)
        return float(vector.sum())

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        return await batcher.encode("three words here", follow_up=follow_up)

    answer = run(go, encoder)
    assert answer.followed == 3.0 * encoder.dim  # the follow-up saw this query's vector
    assert answer.follow_us >= 2000
    assert len(threads) == 1 and threads[0].startswith("encoder")  # not the event loop


def test_follow_ups_wait_for_their_caller_in_a_batch_or_when_declined() -> None:
    encoder = SlowEncoder(delay_s=0.02)
    ran: list[str] = []

    def follow_up_of(text: str):  # type: ignore[no-untyped-def]
        def follow_up(vector: np.ndarray) -> None:
            ran.append(text)
            return None  # declined: e.g. the index is busy

        return follow_up

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        busy = asyncio.ensure_future(batcher.encode("keeps the encoder busy"))
        await asyncio.sleep(0.005)
        together = [batcher.encode(t, follow_up=follow_up_of(t)) for t in ("a b", "c d e")]
        await busy
        return await asyncio.gather(*together)

    together = run(go, encoder)
    assert [a.batch_size for a in together] == [2, 2]
    assert all(a.followed is None and a.follow_us == 0 for a in together)
    assert ran == []  # a batch of two leaves both follow-ups to their callers
    lone = run(lambda b: b.encode("alone", follow_up=follow_up_of("alone")), encoder)
    assert ran == ["alone"] and lone.followed is None  # declined: the caller does it


def test_a_failing_follow_up_fails_only_its_own_request() -> None:
    encoder = SlowEncoder(delay_s=0.0)

    def broken(vector: np.ndarray) -> None:
        raise ValueError("index exploded")

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        with pytest.raises(ValueError, match="index exploded"):
            await batcher.encode("doomed", follow_up=broken)
        return await batcher.encode("fine afterwards")

    assert run(go, encoder).vector[0] == 2.0


def test_split_by_tokens_gives_an_oversized_text_its_own_group() -> None:
    items = [TokenizedText(np.zeros(n, dtype=np.int64), False) for n in (3, 50, 4, 5)]
    groups = split_by_tokens(items, max_tokens=12)
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3]
    assert [1] in groups
    assert all(len(g) * max(items[i].length for i in g) <= 12 for g in groups if g != [1])


def test_expired_and_cancelled_queries_cost_no_compute() -> None:
    encoder = SlowEncoder(delay_s=0.05)

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        busy = asyncio.ensure_future(batcher.encode("keeps the encoder busy"))
        await asyncio.sleep(0.01)
        doomed = asyncio.ensure_future(batcher.encode("expires", deadline=loop.time() + 0.01))
        cancelled = asyncio.ensure_future(batcher.encode("cancelled"))
        await asyncio.sleep(0)
        cancelled.cancel()
        await busy
        with pytest.raises(DeadlineExpired):
            await doomed
        return batcher.texts_encoded

    assert run(go, encoder) == 1  # only the query that was still wanted was encoded


def test_a_full_queue_refuses_at_once() -> None:
    encoder = SlowEncoder(delay_s=0.05)

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        tasks = [asyncio.ensure_future(batcher.encode(f"q {n}")) for n in range(10)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        return results

    results = run(go, encoder, max_batch_size=2, max_queue=4)
    refused = [r for r in results if isinstance(r, Overloaded)]
    assert refused and len(refused) + sum(not isinstance(r, Exception) for r in results) == 10


class RecordingIndex:
    """Scores are the dot product with fixed passage vectors; records each call's row count."""

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.vectors = rng.normal(size=(50, 4)).astype(np.float32)
        self.calls: list[tuple[int, int, int | None, bool]] = []

    def search(self, queries: np.ndarray, k: int, ef: int | None, with_text: bool) -> list:  # type: ignore[type-arg]
        time.sleep(0.01)  # a busy search thread lets the next queries gather
        self.calls.append((len(queries), k, ef, with_text))
        scores = queries @ self.vectors.T
        return [list(np.argsort(-row)[:k]) for row in scores]


def test_searches_that_wait_together_run_as_one_call_with_their_own_answers() -> None:
    from bertdot.server.engine.search_batcher import SearchBatcher

    index = RecordingIndex()
    queries = np.random.default_rng(1).normal(size=(30, 4)).astype(np.float32)
    ks = [3 if n % 3 else 5 for n in range(30)]

    async def go() -> list:  # type: ignore[type-arg]
        with ThreadPoolExecutor(1) as pool:
            searches = SearchBatcher(index, pool)
            try:
                return await asyncio.gather(
                    *(searches.search(q, k, 64, False) for q, k in zip(queries, ks, strict=True))
                )
            finally:
                await searches.stop()

    answers = asyncio.run(go())
    expected = [
        list(np.argsort(-(index.vectors @ q))[:k]) for q, k in zip(queries, ks, strict=True)
    ]
    assert answers == expected  # each query its own answer, at its own k
    assert sum(rows for rows, *_ in index.calls) == 30
    assert len(index.calls) < 10  # batched: far fewer calls than queries
    assert all(k in (3, 5) and ef == 64 for _, k, ef, _ in index.calls)  # one k per call
