"""The encoder thread's scheduler: micro-batched queries first, bulk work in slices between.

Dynamic micro-batching of single-text encodes: many concurrent queries, one ORT call.

One future per request. A batch is flushed when it reaches `max_batch_size`, or when its
oldest request has waited `max_wait_us` (0 by default: the queries that queued while the
encoder was busy go as soon as it is free); each ONNX Runtime call is further bounded by
`max_batch_tokens` padded tokens. Requests that were cancelled or whose deadline has
passed are dropped before they cost compute. An exception in the batch function reaches
every request of the batch; nobody waits on a future that no one will complete.

A request may bring a follow-up: work its vector goes on to (the server's index search).
When the request is encoded alone and nothing else waits, the encoder thread runs the
follow-up at once, instead of handing the vector back to the event loop and on to the search
thread. At concurrency 1 that saves two thread hand-offs per query; under load batches form
and the follow-up is left to its caller. A follow-up answers None when it cannot run now
(the index thread is busy); its caller then does the work the usual way.

Bulk work (`encode_bulk`: several texts of one request) runs in bounded slices
(`bulk.BulkJob`), one per turn of the encoder thread. When queries and bulk work both wait,
turns alternate: a query never waits behind more than one slice, and bulk work keeps at
least every other turn however many queries arrive, so it always finishes. Bulk jobs take
their turns round-robin among themselves.

The queue's depth counts live requests only: a query whose caller cancelled, or whose
deadline passed (a timer fails it at that moment), leaves the count at once, so dead
queries never hold the places live ones are refused for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertdot.server.encoding.encoder import Encoder
from bertdot.server.encoding.tokenization import TokenizedText, split_by_tokens
from bertdot.server.engine.bulk import BulkJob, BulkResult
from bertdot.server.engine.offload import microseconds, run_on
from bertdot.server.engine.request_queue import RequestQueue
from bertdot.server.errors import DeadlineExpired, Overloaded

log = logging.getLogger(__name__)

# Work a lone query's vector goes on to in the encoder thread; None: not done, do it later.
FollowUp = Callable[[np.ndarray], Any]


@dataclass(frozen=True)
class EncodedText:
    vector: np.ndarray
    token_count: int
    truncated: bool
    queue_us: int
    tokenize_us: int
    encode_us: int
    batch_size: int
    followed: Any = None  # what the follow-up answered, if the encoder thread ran it
    follow_us: int = 0


@dataclass
class _Waiting:
    text: str
    future: asyncio.Future[EncodedText]
    deadline: float | None  # loop.time() by which the caller gives up
    enqueued: float  # time.perf_counter()
    follow_up: FollowUp | None = None
    counted: bool = True  # still counted in the queue's depth
    timer: asyncio.TimerHandle | None = None  # fails the request when its deadline passes


@dataclass
class _BatchResult:
    rows: list[int]  # positions in the batch that were still wanted, and were encoded
    items: list[TokenizedText]
    vectors: np.ndarray
    tokenize_s: float
    encode_s: float
    started: float  # perf_counter() when the encoder thread picked the batch up
    followed: Any = None
    follow_s: float = 0.0
    follow_error: BaseException | None = None


class QueryBatcher(RequestQueue[_Waiting]):
    def __init__(
        self,
        encoder: Encoder,
        executor: Executor,
        *,
        max_batch_size: int = 32,
        max_batch_tokens: int = 8192,
        max_wait_us: int = 0,
        max_queue: int = 1024,
        bulk_slice_tokens: int = 768,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._encoder = encoder
        self._executor = executor
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.max_wait_s = max_wait_us / 1e6
        self.max_queue = max_queue
        self.bulk_slice_tokens = bulk_slice_tokens
        self._on_batch = on_batch
        super().__init__("batcher")
        self._live = 0  # queries waiting whose callers still want them
        self._bulk: deque[BulkJob] = deque()
        self._last_turn_bulk = False
        self.texts_encoded = 0  # counts compute actually spent, for tests and metrics

    @property
    def depth(self) -> int:
        """Live queries waiting for the encoder (cancelled and expired ones never count)."""
        return self._live

    async def encode(
        self, text: str, deadline: float | None = None, follow_up: FollowUp | None = None
    ) -> EncodedText:
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() >= deadline:
            raise DeadlineExpired("deadline passed before the query was queued")
        if self._live >= self.max_queue:
            raise Overloaded(queue_full(self.max_queue))
        future: asyncio.Future[EncodedText] = loop.create_future()
        waiting = _Waiting(text, future, deadline, time.perf_counter(), follow_up)
        self._live += 1
        future.add_done_callback(lambda _: self._uncount(waiting))
        if deadline is not None:
            waiting.timer = loop.call_at(deadline, _expire, future)
        self._push(waiting)
        return await future

    async def encode_bulk(self, texts: Sequence[str], deadline: float | None = None) -> BulkResult:
        """Encode many texts in slices, between the queries' batches. The caller admits the
        request (`BulkAdmission`); here it only waits for its turns."""
        loop = asyncio.get_running_loop()
        if deadline is not None and loop.time() >= deadline:
            raise DeadlineExpired("deadline passed before the request was queued")
        future: asyncio.Future[BulkResult] = loop.create_future()
        self._bulk.append(BulkJob(list(texts), future, deadline))
        self._wakeup.set()
        self.start()
        return await future

    def _uncount(self, waiting: _Waiting) -> None:
        if waiting.counted:
            waiting.counted = False
            self._live -= 1
        if waiting.timer is not None:
            waiting.timer.cancel()

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue and not self._bulk:
                self._wakeup.clear()
                await self._wakeup.wait()
            self._drop_dead_queries()
            if self._queue and (not self._bulk or self._last_turn_bulk):
                wait = self._queue[0].enqueued + self.max_wait_s - time.perf_counter()
                if len(self._queue) < self.max_batch_size and wait > 0 and not self._bulk:
                    self._wakeup.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), wait)
                    continue
                self._last_turn_bulk = False
                batch = self._take(loop.time())
                if batch:
                    await self._run(batch)
            elif self._bulk:
                self._last_turn_bulk = True
                await self._bulk_turn(loop.time())

    def _drop_dead_queries(self) -> None:
        """Cancelled and expired queries at the head of the queue cost no turn."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()

    def _take(self, now: float) -> list[_Waiting]:
        batch: list[_Waiting] = []
        while self._queue and len(batch) < self.max_batch_size:
            waiting = self._queue.popleft()
            if waiting.future.done():  # cancelled by the caller: costs nothing
                continue
            if waiting.deadline is not None and now >= waiting.deadline:
                waiting.future.set_exception(DeadlineExpired("deadline passed while queued"))
                continue
            self._uncount(waiting)  # taken: no longer waiting
            batch.append(waiting)
        return batch

    async def _bulk_turn(self, now: float) -> None:
        """One slice of the job at the head of the bulk queue; it then goes to the back."""
        job = self._bulk.popleft()
        if job.future.done():  # the caller gave up: the rest costs nothing
            return
        if job.deadline is not None and now >= job.deadline:
            job.future.set_exception(DeadlineExpired("deadline passed while encoding"))
            return
        try:
            await run_on(self._executor, job.turn, self._encoder, self.bulk_slice_tokens)
            if job.done:
                self.texts_encoded += len(job.texts)
                if not job.future.done():
                    job.future.set_result(job.result())
                return
        except Exception as exc:
            log.exception("bulk encode of %d texts failed", len(job.texts))
            if not job.future.done():
                job.future.set_exception(exc)
            return
        self._bulk.append(job)

    async def stop(self) -> None:
        await super().stop()
        for job in self._bulk:
            if not job.future.done():
                job.future.set_exception(Overloaded("server is shutting down"))
        self._bulk.clear()

    async def _run(self, batch: list[_Waiting]) -> None:
        try:
            result = await run_on(self._executor, self._encode_batch, batch)
            if len(result.items) != len(result.rows) or len(result.vectors) != len(result.rows):
                raise RuntimeError("batch function returned a wrong number of results")
        except Exception as exc:
            log.exception("encoder batch of %d failed", len(batch))
            self._fail(batch, exc)
            return
        self.texts_encoded += len(result.rows)
        if self._on_batch and result.rows:
            self._on_batch(len(result.rows))
        encoded = dict(zip(result.rows, range(len(result.rows)), strict=True))
        for position, waiting in enumerate(batch):
            if waiting.future.done():
                continue
            if position not in encoded:
                waiting.future.set_exception(DeadlineExpired("deadline passed while queued"))
                continue
            if result.follow_error is not None:
                waiting.future.set_exception(result.follow_error)
                continue
            row = encoded[position]
            item = result.items[row]
            waiting.future.set_result(
                EncodedText(
                    vector=result.vectors[row],
                    token_count=item.length,
                    truncated=item.truncated,
                    queue_us=microseconds(result.started - waiting.enqueued),
                    tokenize_us=microseconds(result.tokenize_s),
                    encode_us=microseconds(result.encode_s),
                    batch_size=len(result.rows),
                    followed=result.followed,
                    follow_us=microseconds(result.follow_s),
                )
            )

    def _encode_batch(self, batch: list[_Waiting]) -> _BatchResult:
        """Runs in the encoder thread: tokenize, then one ORT call per token-bounded group.

        The encoder thread may have been busy with other work (bulk requests) since the
        batch was formed, so cancellation and deadlines are checked again here, right
        before compute. (`loop.time()` is `time.monotonic()`, safe to read from a thread.)
        """
        t0 = time.perf_counter()
        now = time.monotonic()
        rows = [
            i
            for i, w in enumerate(batch)
            if not w.future.done() and (w.deadline is None or now < w.deadline)
        ]
        items = self._encoder.tokenize([batch[i].text for i in rows]) if rows else []
        t1 = time.perf_counter()
        vectors = np.empty((len(items), self._encoder.dim), dtype=np.float32)
        for group in split_by_tokens(items, self.max_batch_tokens):
            vectors[group] = self._encoder.encode_tokenized([items[i] for i in group])
        t2 = time.perf_counter()
        result = _BatchResult(rows, items, vectors, t1 - t0, t2 - t1, t0)
        lone = batch[rows[0]] if len(rows) == 1 else None
        # Only while nothing else waits (len() of a deque is atomic) and the caller still does.
        if lone and lone.follow_up and not self._queue and not lone.future.done():
            try:
                result.followed = lone.follow_up(vectors[0])
            except Exception as exc:  # the request's own failure, not the encoder's
                result.follow_error = exc
            result.follow_s = time.perf_counter() - t2
        return result


def queue_full(limit: int) -> str:
    """The one wording of a queue-full refusal, for queries and bulk requests alike."""
    return f"queue full ({limit} requests waiting); retry later"


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(DeadlineExpired("deadline passed while queued"))
