"""The request loops of `bertdot bench`: unary and streaming, closed and open loop.

Hot-path choices (the target answers in 1-10 ms, so the generator must drive thousands of
requests/s from one core): raw generated stubs and messages, no result conversion, no
retries (the server's refusals must be counted, not retried away), token metadata passed
per call rather than through an interceptor, request messages built once per query for
unary calls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Iterator
from time import perf_counter

import grpc

from bertdot.client.bench.config import BenchConfig
from bertdot.client.bench.stats import Stats
from bertdot.client.channel import bearer_metadata
from bertdot.client.errors import from_status
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

Pending = dict[str, tuple[float, float]]  # stream request id → (intended, actual) send time


def _code_name(number: int) -> str:
    return from_status(number, "").code.name


class Load:
    """One run: its clock (warm-up, window end), its recorder and its loops."""

    def __init__(self, config: BenchConfig, stubs: list[pb_grpc.RetrievalStub]) -> None:
        """`stubs`: one per connection; the load is spread over them evenly."""
        self.config = config
        self.stubs = stubs
        self.metadata = bearer_metadata(config.token) or None
        self.start = perf_counter()
        window_start = self.start + config.warmup_s
        self.end = window_start + config.duration_s
        self.stats = Stats(self.start, window_start)
        self.requests = [self._request(q, "") for q in config.queries]

    def _request(self, query: str, request_id: str) -> pb.SearchRequest:
        request = pb.SearchRequest(id=request_id, query=query, k=self.config.k)
        if self.config.ef is not None:
            request.ef = self.config.ef
        return request

    def _schedule(self) -> Iterator[float]:
        """Intended send times of the open loop, from now until the end."""
        rate = self.config.rate or 1.0
        rng = random.Random(self.config.seed)
        poisson = self.config.arrivals == "poisson"
        t, i = self.start, 0
        while t < self.end:
            yield t
            i += 1  # constant: computed from i, so rounding errors do not add up
            t = t + rng.expovariate(rate) if poisson else self.start + i / rate

    async def _paced(self, schedule: Iterator[float]) -> AsyncIterator[float]:
        for intended in schedule:
            # sleep(0) when behind still lets answers be processed between sends.
            await asyncio.sleep(max(intended - perf_counter(), 0.0))
            yield intended

    # ------------------------------------------------------------- unary ----

    async def _one(
        self, stub: pb_grpc.RetrievalStub, request: pb.SearchRequest, intended: float
    ) -> None:
        sent = perf_counter()
        try:
            response = await stub.Search(
                request, timeout=self.config.timeout_s, metadata=self.metadata
            )
        except grpc.aio.AioRpcError as err:
            self.stats.error(intended, perf_counter(), err.code().name)
        else:
            self.stats.ok(intended, sent, perf_counter(), response.timings)

    async def _closed_worker(self, worker: int) -> None:
        requests, step = self.requests, self.config.concurrency
        stub = self.stubs[worker % len(self.stubs)]
        i = worker
        while (now := perf_counter()) < self.end:
            await self._one(stub, requests[i % len(requests)], now)
            i += step

    async def unary(self) -> None:
        if not self.config.open_loop:
            workers = [self._closed_worker(w) for w in range(self.config.concurrency)]
            await asyncio.gather(*workers)
            return
        tasks: set[asyncio.Task[None]] = set()
        requests, cap, i = self.requests, self.config.max_in_flight, 0
        stubs = self.stubs
        async for intended in self._paced(self._schedule()):
            if len(tasks) >= cap:
                self.stats.drop(intended)
                continue
            stub, request = stubs[i % len(stubs)], requests[i % len(requests)]
            task = asyncio.create_task(self._one(stub, request, intended))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        if tasks:  # every call has its own deadline: this ends
            await asyncio.wait(tasks)

    # ------------------------------------------------------------ stream ----

    async def stream(self) -> None:
        """One SearchStream per connection at a time; a stream that fails is counted and
        replaced. Closed loop: the concurrency is split evenly over the connections.

        The open-loop schedule (a plain iterator, which a cancelled writer cannot close)
        is shared by the connections' streams and by successive streams, so each intended
        send happens once and a replacement does not replay the schedule.
        """
        schedule = self._schedule() if self.config.open_loop else None
        n = len(self.stubs)
        shares = [len(range(c, self.config.concurrency, n)) for c in range(n)]
        pairs = zip(self.stubs, shares, strict=True)
        await asyncio.gather(*(self._streams(stub, schedule, share) for stub, share in pairs))

    async def _streams(
        self, stub: pb_grpc.RetrievalStub, schedule: Iterator[float] | None, concurrency: int
    ) -> None:
        if schedule is None and concurrency == 0:
            return  # more connections than requests in flight
        while perf_counter() < self.end:
            failed = await self._one_stream(stub, schedule, concurrency)
            if failed and perf_counter() < self.end:
                await asyncio.sleep(0.1)  # do not spin against a server refusing streams

    async def _one_stream(
        self, stub: pb_grpc.RetrievalStub, schedule: Iterator[float] | None, concurrency: int
    ) -> bool:
        """Run one stream to its end; True when it failed as a whole."""
        call = stub.SearchStream(metadata=self.metadata)
        pending: Pending = {}
        slots = None
        if schedule is None:
            slots = asyncio.Semaphore(concurrency)
            writer = asyncio.create_task(self._write(call, pending, slots))
        else:
            writer = asyncio.create_task(self._write_paced(call, pending, schedule))
        code = None
        try:
            limit = self.end - perf_counter() + self.config.timeout_s
            await asyncio.wait_for(self._read(call, pending, slots), max(limit, 0.0))
        except grpc.aio.AioRpcError as err:
            code = err.code().name
        except asyncio.TimeoutError:
            code = "DEADLINE_EXCEEDED"
        finally:
            writer.cancel()
            call.cancel()
        now = perf_counter()
        for intended, _ in pending.values():
            # An OK end that leaves queries unanswered is a server bug: UNKNOWN.
            self.stats.error(intended, now, code or "UNKNOWN")
        return code is not None or bool(pending)

    async def _write_paced(
        self, call: grpc.aio.StreamStreamCall, pending: Pending, schedule: Iterator[float]
    ) -> None:
        """Open loop: write at the intended times, dropping sends beyond ``max_in_flight``."""
        queries, cap, seq = self.config.queries, self.config.max_in_flight, 0
        try:
            async for intended in self._paced(schedule):
                if len(pending) >= cap:
                    self.stats.drop(intended)
                    continue
                request = self._request(queries[seq % len(queries)], str(seq))
                pending[request.id] = (intended, perf_counter())
                seq += 1
                await call.write(request)
            await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            return  # the stream ended; the reader reports its status

    async def _write(
        self, call: grpc.aio.StreamStreamCall, pending: Pending, slots: asyncio.Semaphore
    ) -> None:
        """Closed loop: write whenever one of the ``concurrency`` slots is free."""
        queries, seq = self.config.queries, 0
        try:
            while True:
                await slots.acquire()
                if (now := perf_counter()) >= self.end:
                    break
                request = self._request(queries[seq % len(queries)], str(seq))
                pending[request.id] = (now, now)
                seq += 1
                await call.write(request)
            await call.done_writing()
        except (grpc.RpcError, asyncio.InvalidStateError):
            return

    async def _read(
        self, call: grpc.aio.StreamStreamCall, pending: Pending, slots: asyncio.Semaphore | None
    ) -> None:
        read, stats = call.read, self.stats
        while (response := await read()) is not grpc.aio.EOF:
            done = perf_counter()
            times = pending.pop(response.id, None)
            if times is None:
                continue  # not one of ours
            if slots is not None:
                slots.release()
            if response.HasField("error") and response.error.code:
                stats.error(times[0], done, _code_name(response.error.code))
            else:
                stats.ok(times[0], times[1], done, response.timings)
