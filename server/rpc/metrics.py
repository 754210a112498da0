"""Prometheus metrics, names prefixed `bertdot_`, served on their own HTTP port.

Each server owns its registry, so several servers in one process (tests) do not clash.
Families (the README lists them with their labels):
    bertdot_requests_total{method,code}            every RPC of bertdot.v1.Retrieval, refusals
                                                   by the token check and the size limit too
    bertdot_request_latency_seconds{method}        as the server sees it
    bertdot_stage_latency_seconds{method,stage}    queue, tokenize, encode, search, apply
    bertdot_batch_size                             queries per encoder call
    bertdot_queue_depth                            live queries waiting for the encoder
    bertdot_index_size                             passages in the served index
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0, 5.0,
)  # fmt: skip


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "bertdot_requests", "RPCs handled, by method and status code.", ["method", "code"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "bertdot_request_latency_seconds", "RPC latency seen by the server, by method.",
            ["method"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.stage = Histogram(
            "bertdot_stage_latency_seconds", "Time per stage of a request, by method (queue, "
            "tokenize, encode, search; apply for Upsert).", ["method", "stage"],
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.batch_size = Histogram(
            "bertdot_batch_size", "Queries per encoder call.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=self.registry,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "bertdot_queue_depth", "Live queries waiting for the encoder.", registry=self.registry
        )
        self.index_size = Gauge(
            "bertdot_index_size", "Passages in the served index.", registry=self.registry
        )
        self._http: Any = None

    def watch(self, queue_depth: Callable[[], float], index_size: Callable[[], float]) -> None:
        self.queue_depth.set_function(queue_depth)
        self.index_size.set_function(index_size)

    def observe_stages(self, method: str, **stages_us: int) -> None:
        """One observation per stage, in microseconds as the answers carry them."""
        for stage, us in stages_us.items():
            self.stage.labels(method, stage).observe(us / 1e6)

    def serve(self, port: int, host: str = "0.0.0.0") -> int:
        """Start the HTTP exporter; returns the bound port (useful with port 0)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = server
        return int(server.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
