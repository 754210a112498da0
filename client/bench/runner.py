"""The `bertdot bench` load generator: closed or open loop, unary or streaming search.

Closed loop (``rate=None``): ``concurrency`` requests are always outstanding; each sends
its next request when its answer arrives, as ghz does. Latency is then answer − send.

Open loop (``rate`` queries/s): sends follow a fixed schedule (constant or Poisson
arrivals) whatever the server does, up to ``max_in_flight`` unanswered requests, beyond
which a send is counted as dropped. Latency is answer − *intended* send time, as in wrk2:
when the server (or this generator) falls behind, the queueing shows up in the
percentiles instead of silently slowing the schedule down (coordinated omission).

The settings are in ``config``, the loops in ``loops``, the recorder in ``stats``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from time import perf_counter
from typing import Any

from bertdot.client.bench.config import BenchConfig, BenchResult
from bertdot.client.bench.loops import Load
from bertdot.client.bench.queries import DEFAULT_QUERIES
from bertdot.client.bench.stats import Snapshot, Stats, merged, to_state
from bertdot.client.channel import ChannelConfig, create_aio_channel
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

__all__ = ["DEFAULT_QUERIES", "BenchConfig", "BenchResult", "run_bench", "run_bench_processes"]
_PROCESS_START_S = 3.0


async def run_bench(
    config: BenchConfig,
    on_progress: Callable[[Snapshot], None] | None = None,
    progress_every_s: float = 0.5,
) -> BenchResult:
    """Run the load test; call ``on_progress`` every ``progress_every_s`` seconds."""
    if not config.queries:
        raise ValueError("no queries to send")
    channel_config = ChannelConfig(
        target=config.target,
        tls=config.tls,
        root_certificates=config.ca,
        max_attempts=1,
        connections=config.connections,  # each channel then gets its own connection
    )
    channels = [create_aio_channel(channel_config) for _ in range(config.connections)]
    try:
        # Connect before the clock starts, so a short warm-up is not spent on the handshake.
        # A server still unreachable then is not waited for: its UNAVAILABLEs are counted.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(
                asyncio.gather(*(c.channel_ready() for c in channels)), min(config.timeout_s, 5.0)
            )
        runner = Load(config, [pb_grpc.RetrievalStub(c) for c in channels])
        ticker = asyncio.create_task(_tick(runner.stats, on_progress, progress_every_s))
        try:
            await (runner.stream() if config.mode == "stream" else runner.unary())
        finally:
            ticker.cancel()
    finally:
        await asyncio.gather(*(c.close() for c in channels))
    return BenchResult(config, runner.stats, runner.stats.measured_s(config.duration_s))


def split(config: BenchConfig) -> list[BenchConfig]:
    """The configuration of each of `config.processes` processes: the concurrency (closed
    loop) or the rate (open loop), the connections and the in-flight cap shared evenly."""
    n = config.processes
    if not config.open_loop and config.concurrency < n:
        raise ValueError(f"concurrency {config.concurrency} is below processes {n}")
    if config.connections < n:
        raise ValueError(f"connections {config.connections} is below processes {n}")

    def share(total: int, i: int) -> int:
        return len(range(i, total, n))

    return [
        replace(
            config,
            processes=1,
            concurrency=share(config.concurrency, i) if not config.open_loop else 1,
            connections=share(config.connections, i),
            rate=config.rate / n if config.rate is not None else None,
            max_in_flight=max(1, share(config.max_in_flight, i)),
            seed=None if config.seed is None else config.seed + i,
        )
        for i in range(n)
    ]


def _bench_process(config: BenchConfig, start_at: float) -> dict[str, Any]:
    """One load-generating process: wait for the common start, run, return its recording."""
    time.sleep(max(start_at - time.monotonic(), 0.0))
    result = asyncio.run(run_bench(config))
    return to_state(result.stats, config.duration_s)


def run_bench_processes(config: BenchConfig) -> BenchResult:
    """`config.processes` processes load the server together; one merged result."""
    parts = split(config)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(parts), mp_context=context) as pool:
        # Start together once every process is up (spawning and imports take ~1 s).
        start_at = time.monotonic() + _PROCESS_START_S
        states = list(pool.map(_bench_process, parts, [start_at] * len(parts)))
    stats, measured_s = merged(states)
    return BenchResult(config, stats, measured_s)


async def _tick(stats: Stats, on_progress: Callable[[Snapshot], None] | None, every: float) -> None:
    while on_progress is not None:
        await asyncio.sleep(every)
        on_progress(stats.snapshot(perf_counter()))
