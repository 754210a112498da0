"""What one `bertdot bench` run is asked to do, and what it measured."""

from __future__ import annotations

from dataclasses import dataclass

from bertdot.client.bench.queries import DEFAULT_QUERIES
from bertdot.client.bench.stats import Stats


@dataclass(frozen=True)
class BenchConfig:
    """One load test, as built by the CLI."""

    target: str = "127.0.0.1:50051"
    queries: tuple[str, ...] = DEFAULT_QUERIES
    k: int = 10
    ef: int | None = None
    mode: str = "unary"  # or "stream"
    concurrency: int = 1  # closed loop only
    # TCP connections the load is spread over: a server of several worker processes on one
    # port (SO_REUSEPORT) gets each connection to one worker, so one connection tests one.
    connections: int = 1
    rate: float | None = None  # queries/s; set = open loop
    arrivals: str = "constant"  # or "poisson"
    max_in_flight: int = 1024  # open loop only
    duration_s: float = 10.0
    warmup_s: float = 1.0
    timeout_s: float = 10.0  # deadline of each unary call; drain limit of a stream
    seed: int | None = None  # of the Poisson schedule
    token: str | None = None
    tls: bool = False
    ca: str | None = None
    # Load-generating processes: one used 0.89 of a core to drive 3,411 streamed queries/s
    # (measured on the GPU host), so a faster server needs several, or the client is measured.
    processes: int = 1

    @property
    def open_loop(self) -> bool:
        return self.rate is not None


@dataclass(frozen=True)
class BenchResult:
    config: BenchConfig
    stats: Stats
    duration_s: float  # measured length of the window (see Stats.measured_s)
