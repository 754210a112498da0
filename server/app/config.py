"""The server's configuration: read once (flags, then BERTDOT_* variables) into a frozen value."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bertdot.server.engine.validation import Limits


@dataclass(frozen=True)
class BatchingConfig:
    max_batch_size: int = 32
    max_batch_tokens: int = 8192
    # 0: a query runs as soon as the encoder is free, and the queries that arrive while it
    # is busy form the next batch. Waiting longer only delays a lone query (measured: +1.2 ms
    # p50 at concurrency 1 with 1000 µs, same throughput under load).
    max_wait_us: int = 0
    max_queue: int = 512
    # Bulk work (several texts of one request) runs in slices of at most this many padded
    # tokens, and waiting queries go between two slices. Long texts cost far more per token
    # than queries (attention grows with length): four MiniLM passages of 256 tokens took
    # about 0.2 s on a 2-core CPU, so a query waits about that long behind an Encode of 256
    # long texts (it waited 10 s when the Encode ran as one call). A GPU wants far more.
    bulk_slice_tokens: int = 768


@dataclass(frozen=True)
class TLSConfig:
    cert: Path
    key: Path
    client_ca: Path | None = None  # set: clients must present a certificate it signed


@dataclass(frozen=True)
class ServerConfig:
    model: Path
    index: Path | None = None
    host: str = "127.0.0.1"
    port: int = 50051
    metrics_port: int | None = None  # None: no metrics endpoint; 0: any free port
    device: str = "auto"
    precision: str | None = None
    intra_op_threads: int = 0
    inter_op_threads: int = 0
    cuda_graphs: bool = True  # on CUDA: replay captured graphs for the small batch shapes
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    limits: Limits = field(default_factory=Limits)
    tls: TLSConfig | None = None
    token: str | None = None
    grace_s: float = 10.0
    max_message_bytes: int = 16 * 1024 * 1024
    read_only: bool = False  # refuse Upsert/Delete (also when the index dir is not writable)
    snapshot_interval_s: float | None = None  # save the graph this often when it has new writes
    rebuild_graph: bool = False  # rebuild a missing or corrupt graph file from the store
    # Check the passage store's pages (SQLite quick_check) after the server starts serving,
    # in the background, instead of before: for stores large enough that the check delays
    # the start too long (see the README for its cost per million passages).
    defer_store_check: bool = False
    # A read-only server polls the store this often for writes another process made (0: never).
    follow_interval_s: float = 0.5
    workers: int = 1  # serving processes sharing the port (see supervisor.py)
    # Set by the supervisor for each worker process:
    reuse_port: bool = False  # several processes listen on the port; the kernel spreads connections
    private_address: str | None = None  # the writer worker also listens here (a unix socket)
    writer_address: str | None = None  # a replica worker forwards Upsert and Delete here
