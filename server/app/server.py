"""Assembles a serving process: gRPC server, health, reflection, metrics, lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bertdot.server.app.config import ServerConfig
from bertdot.server.encoding.encoder import Encoder
from bertdot.server.engine.follow import Follower
from bertdot.server.engine.query_batcher import QueryBatcher
from bertdot.server.engine.retriever import Retriever
from bertdot.server.engine.snapshots import Snapshots
from bertdot.server.engine.threads import Workers
from bertdot.server.index.damage import StoreDamaged
from bertdot.server.index.index import STORE_NAME, Index
from bertdot.server.rpc.interceptors import ServingInterceptor
from bertdot.server.rpc.metrics import ServerMetrics
from bertdot.server.rpc.reflection import enable_reflection
from bertdot.server.rpc.servicer import RetrievalService
from bertdot.server.rpc.wire_guard import WIRE_LIMIT_FACTOR, DecodeGuard
from bertdot.server.rpc.write_forwarding import WriteForwarder
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Retrieval"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _version() -> str:
    try:
        return version("bertdot")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def _load(config: ServerConfig) -> tuple[Encoder, Index | None, bool]:
    """The encoder, the index (or None) and whether writes are refused."""
    encoder = Encoder(
        config.model,
        device=config.device,  # type: ignore[arg-type]
        precision=config.precision,
        intra_op_threads=config.intra_op_threads,
        inter_op_threads=config.inter_op_threads,
        batch_size=config.batching.max_batch_size,
        cuda_graphs=config.cuda_graphs,
    )
    index: Index | None = None
    read_only = config.read_only
    if config.index is not None:
        if not read_only and not index_writable(config.index):
            log.warning("index %s is not writable: serving it read-only", config.index)
            read_only = True
        index = Index.open(
            config.index,
            expected_fingerprint=encoder.fingerprint,
            expected_similarity=encoder.similarity,
            writer=not read_only,
            read_only=read_only,
            rebuild_graph=config.rebuild_graph,
            check_store=not config.defer_store_check,
        )
    return encoder, index, read_only


def index_writable(root: Path) -> bool:
    """Whether this process may write the index folder and its store (a replica's copy on a
    read-only volume is not)."""
    return os.access(root, os.W_OK) and os.access(root / STORE_NAME, os.W_OK)


def _warm_up(encoder: Encoder, max_batch_size: int) -> None:
    """Run the shapes served most before taking traffic (first calls allocate and tune)."""
    for words in (4, 12, 28):
        text = " ".join(["warm"] * words)
        encoder.encode([text])
        encoder.encode([text] * max_batch_size, batch_size=max_batch_size)


def _warm_index(index: Index) -> None:
    """One search before taking traffic: it opens the search thread's store connection and
    pages in the graph and the store (the first query paid ~40 ms for this, measured)."""
    index.search(np.ones((1, index.dim), dtype=np.float32), k=10)


def _info(encoder: Encoder, index: Index | None, read_only: bool) -> pb.InfoResponse:
    m = encoder.manifest
    response = pb.InfoResponse(
        model=pb.ModelInfo(
            source=str(m.source.get("id") or ""),
            revision=str(m.source.get("revision") or ""),
            architecture=m.architecture,
            dim=m.dim,
            pooling=m.pooling,
            similarity=m.similarity,
            precision=encoder.precision,
            provider=encoder.provider,
            max_length=m.max_length,
            artifact_fingerprint=m.fingerprint,
        ),
        server_version=_version(),
    )
    if index is not None:
        params = index.manifest
        response.index.CopyFrom(
            pb.IndexInfo(
                size=index.count,
                m=params.M,
                ef_construction=params.ef_construction,
                default_ef=params.ef_search,
                read_only=read_only,
                sequence=index.sequence,
            )
        )
    return response


class BertdotServer:
    """One serving process. `start()` listens at once and reports NOT_SERVING until the
    model is warm and the index loaded; `stop()` drains in-flight requests."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.metrics = ServerMetrics()
        self.health = health.aio.HealthServicer()
        self.service = RetrievalService(self.metrics, _version())
        self.workers = Workers()
        self.port = 0
        self.metrics_port: int | None = None
        self.batcher: QueryBatcher | None = None
        self.index: Index | None = None
        self.read_only = config.read_only
        self._server: grpc.aio.Server | None = None
        self._loading: asyncio.Task[None] | None = None
        self.snapshots: Snapshots | None = None  # set for a writable index
        self._snapshots: asyncio.Task[None] | None = None
        self._following: asyncio.Task[None] | None = None
        self._store_check: asyncio.Task[None] | None = None
        self.forwarder: WriteForwarder | None = None

    async def start(self, wait_ready: bool = True) -> int:
        limit = self.config.max_message_bytes
        self._server = grpc.aio.server(
            interceptors=[ServingInterceptor(self.metrics, self.config.token), DecodeGuard(limit)],
            options=[
                # Our own check (DecodeGuard) answers and counts oversized requests; gRPC's
                # refuses, uncounted, only far beyond it.
                ("grpc.max_receive_message_length", min(limit * WIRE_LIMIT_FACTOR, 2**31 - 1)),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", int(self.config.reuse_port)),
            ],
        )
        pb_grpc.add_RetrievalServicer_to_server(self.service, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        enable_reflection(self._server, (SERVICE_NAME, health.SERVICE_NAME))
        for service in ("", SERVICE_NAME):
            await self.health.set(service, NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        if self.config.tls is not None:
            self.port = self._server.add_secure_port(address, _credentials(self.config))
        else:
            self.port = self._server.add_insecure_port(address)
        if self.config.private_address is not None:  # local only: a unix socket
            self._server.add_insecure_port(self.config.private_address)
        if self.config.metrics_port is not None:
            self.metrics_port = self.metrics.serve(self.config.metrics_port, self.config.host)
        await self._server.start()
        self._loading = asyncio.create_task(self._become_ready())
        if wait_ready:
            await self._loading
        return self.port

    async def _become_ready(self) -> None:
        loop = asyncio.get_running_loop()
        encoder, index, read_only = await loop.run_in_executor(
            self.workers.encoder, _load, self.config
        )
        self.index, self.read_only = index, read_only
        await loop.run_in_executor(
            self.workers.encoder, _warm_up, encoder, self.config.batching.max_batch_size
        )
        if index is not None:
            await loop.run_in_executor(self.workers.search, _warm_index, index)
        batching = self.config.batching
        self.batcher = QueryBatcher(
            encoder,
            self.workers.encoder,
            max_batch_size=batching.max_batch_size,
            max_batch_tokens=batching.max_batch_tokens,
            max_wait_us=batching.max_wait_us,
            max_queue=batching.max_queue,
            bulk_slice_tokens=batching.bulk_slice_tokens,
            on_batch=self.metrics.batch_size.observe,
        )
        self.batcher.start()
        batcher = self.batcher
        self.metrics.watch(lambda: batcher.depth, lambda: index.count if index else 0)
        self.service.info_response = _info(encoder, index, read_only)
        self.service.core = Retriever(
            encoder, index, batcher, self.workers, self.config.limits, read_only=read_only
        )
        if index is not None:
            self._watch_store(index)
        if index is not None and read_only:
            self._follow(index)
        interval = self.config.snapshot_interval_s
        if index is not None and not read_only:
            self.snapshots = Snapshots(index, self.workers.search)
            if interval:
                self._snapshots = asyncio.create_task(self.snapshots.every(interval))
        for service in ("", SERVICE_NAME):
            await self.health.set(service, SERVING)
        log.info("serving on port %d with %s", self.port, encoder.describe())

    def _watch_store(self, index: Index) -> None:
        """A damaged store met while serving: one log line naming the file and what to do,
        health NOT_SERVING (so traffic moves elsewhere), writes refused, DATA_LOSS answers."""
        loop = asyncio.get_running_loop()

        def damaged(damage: StoreDamaged) -> None:  # any thread
            log.error("%s", damage.log_line())
            loop.call_soon_threadsafe(lambda: asyncio.ensure_future(self._not_serving()))

        index.store.on_damage = damaged
        if index.store.damage is not None:
            damaged(index.store.damage)
        if self.config.defer_store_check:
            self._store_check = asyncio.create_task(self._check_store(index))

    async def _check_store(self, index: Index) -> None:
        """The deferred check, on a thread of its own (it reads every page of the store)."""
        ok, _, seconds = await asyncio.to_thread(index.store.integrity)
        if ok:
            log.info("passage store checked in the background: ok (%.1f s)", seconds)

    async def _not_serving(self) -> None:
        for service in ("", SERVICE_NAME):
            await self.health.set(service, NOT_SERVING)

    def _follow(self, index: Index) -> None:
        """A read-only index follows the writes another process makes to its store; a worker
        replica also forwards writes to the writer worker."""
        follower = Follower(index, self.workers.search)
        if self.config.follow_interval_s > 0:
            self._following = asyncio.create_task(follower.every(self.config.follow_interval_s))
        if self.config.writer_address is not None:
            self.forwarder = WriteForwarder(
                self.config.writer_address,
                self.config.token,
                follower,
                self.config.max_message_bytes,
            )
            self.service.writes_to = self.forwarder

    async def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING, refuse new work, finish in-flight requests within `grace`;
        then save the graph if writes arrived since the last save, and close the index."""
        self.service.draining = True
        await self.health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(self.config.grace_s if grace is None else grace)
        if self._loading is not None and not self._loading.done():
            self._loading.cancel()
        for task in (self._snapshots, self._following, self._store_check):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.forwarder is not None:
            await self.forwarder.close()
        if self.batcher is not None:
            await self.batcher.stop()
        if self.service.core is not None:
            await self.service.core.stop()
        if self.snapshots is not None:
            await self.snapshots.save()
        self.workers.shutdown()
        if self.index is not None:
            self.index.close()
        self.metrics.close()

    async def wait(self) -> None:
        if self._server is not None:
            await self._server.wait_for_termination()


def _credentials(config: ServerConfig) -> grpc.ServerCredentials:
    assert config.tls is not None
    tls = config.tls
    client_ca = tls.client_ca.read_bytes() if tls.client_ca else None
    return grpc.ssl_server_credentials(
        [(tls.key.read_bytes(), tls.cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )
