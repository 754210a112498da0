"""The micro-batcher on its own: concurrent queries share encoder calls within the bounds,
a lone query does not wait for company, and dead requests cost no compute."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bertdot.server.encoding.tokenization import TokenizedText, split_by_tokens
from bertdot.server.engine.query_batcher import QueryBatcher
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


class GatedEncoder(SlowEncoder):
    """A SlowEncoder whose first call waits for `release`, so a test can queue work behind
    a call in progress; `entered` is set once that call started."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s)
        self.entered = threading.Event()
        self.release = threading.Event()

    def encode_tokenized(self, items: Sequence[TokenizedText]) -> np.ndarray:
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        return super().encode_tokenized(items)


def _texts(n: int, words: int) -> list[str]:
    return [" ".join(["bulk"] * words)] * n


def test_a_query_behind_a_large_encode_is_served_before_its_second_slice() -> None:
    encoder = GatedEncoder()
    bulk = _texts(40, 50)  # 40 texts × 50 tokens; slices of 100 tokens: 2 texts each

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        job = asyncio.ensure_future(batcher.encode_bulk(bulk))
        await asyncio.to_thread(encoder.entered.wait, 10)  # the first slice is being encoded
        query = asyncio.ensure_future(batcher.encode("a short query"))
        await asyncio.sleep(0.02)  # queued behind it
        encoder.release.set()
        return await asyncio.gather(job, query)

    done, answer = run(go, encoder, bulk_slice_tokens=100)
    assert encoder.calls[0] == (2, 50)  # the first slice
    assert encoder.calls[1] == (1, 3)  # then the query, before the second slice
    assert encoder.calls[2:] == [(2, 50)] * 19  # then the rest of the bulk work
    assert done.slices == 20 and done.encoded.vectors.shape == (40, encoder.dim)
    assert (done.encoded.vectors[:, 0] == 50).all() and done.encoded.token_counts.tolist() == [
        50
    ] * 40
    assert answer.vector[0] == 3.0
    assert done.queue_s > 0  # the query's turn shows as waiting time of the bulk request


def test_bulk_work_keeps_every_other_turn_while_queries_never_stop() -> None:
    encoder = SlowEncoder(delay_s=0.002)
    bulk = _texts(30, 40)  # 10 slices of 3 texts (budget 120 tokens)

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        stop = asyncio.Event()

        async def client(n: int) -> int:
            sent = 0
            while not stop.is_set():
                await batcher.encode(f"query {n} {sent}")
                sent += 1
            return sent

        clients = [asyncio.ensure_future(client(n)) for n in range(4)]
        await asyncio.sleep(0.02)  # queries flowing before the bulk request comes
        done = await asyncio.wait_for(batcher.encode_bulk(bulk), 10)
        stop.set()
        return done, await asyncio.gather(*clients)

    done, sent = run(go, encoder, bulk_slice_tokens=120)
    assert done.slices == 10 and done.encoded.vectors.shape == (30, encoder.dim)
    kinds = ["bulk" if rows == 3 and longest == 40 else "query" for rows, longest in encoder.calls]
    first, last = kinds.index("bulk"), len(kinds) - 1 - kinds[::-1].index("bulk")
    between = kinds[first : last + 1]
    # Queries kept coming, and still no two query batches ran between two slices.
    assert all(sent) and "query" in between
    assert not any(a == b == "query" for a, b in itertools.pairwise(between))


def test_bulk_jobs_take_turns_and_a_cancelled_one_stops_costing() -> None:
    encoder = SlowEncoder(delay_s=0.005)

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        doomed = asyncio.ensure_future(batcher.encode_bulk(_texts(50, 10)))  # 10 slices
        other = asyncio.ensure_future(batcher.encode_bulk(_texts(4, 20)))  # 2 slices
        await asyncio.sleep(0.02)
        doomed.cancel()
        done = await other
        await asyncio.sleep(0.05)
        return done

    done = run(go, encoder, bulk_slice_tokens=50)
    assert done.slices == 2
    slices_of_doomed = sum(1 for rows, longest in encoder.calls if longest == 10)
    assert slices_of_doomed < 10  # dropped at its next turn, not encoded to the end


def test_a_bulk_request_past_its_deadline_stops_between_slices() -> None:
    encoder = SlowEncoder(delay_s=0.02)

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        deadline = asyncio.get_running_loop().time() + 0.05
        with pytest.raises(DeadlineExpired):
            await batcher.encode_bulk(_texts(100, 10), deadline)

    run(go, encoder, bulk_slice_tokens=20)
    assert len(encoder.calls) < 10  # 50 slices asked for; it stopped soon after the deadline


def test_expired_and_cancelled_queries_leave_the_queue_count_at_once() -> None:
    encoder = GatedEncoder()

    async def go(batcher: QueryBatcher):  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        busy = asyncio.ensure_future(batcher.encode("keeps the encoder busy"))
        await asyncio.to_thread(encoder.entered.wait, 10)
        doomed = [
            asyncio.ensure_future(batcher.encode(f"expires {n}", deadline=loop.time() + 0.05))
            for n in range(3)
        ]
        cancelled = asyncio.ensure_future(batcher.encode("cancelled"))
        await asyncio.sleep(0.01)
        assert batcher.depth == 4
        with pytest.raises(Overloaded, match="queue full"):
            await batcher.encode("one too many")
        cancelled.cancel()
        await asyncio.sleep(0.1)  # the deadlines pass; the encoder is still busy
        assert batcher.depth == 0
        live = asyncio.ensure_future(batcher.encode("a live query"))  # admitted
        await asyncio.sleep(0.01)
        assert batcher.depth == 1
        encoder.release.set()
        for task in doomed:
            with pytest.raises(DeadlineExpired):
                await task
        await busy
        return await live, batcher.texts_encoded

    answer, encoded = run(go, encoder, max_queue=4)
    assert answer.vector[0] == 3.0
    assert encoded == 2  # the busy query and the live one: the dead cost nothing
