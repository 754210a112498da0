"""Channel construction shared by the sync and asyncio clients.

Retries: gRPC's built-in retry, configured by the service config below, rather
than a hand-rolled loop. It retries inside the call's own deadline, with
jittered exponential backoff, only while no response has been committed, and
(with ``round_robin``) usually on another replica. Only read methods get a
retry policy, and only for UNAVAILABLE: a write whose answer was lost may have
been applied, so Upsert/Delete are never retried, and INVALID_ARGUMENT etc.
would fail again anyway. Streams are not retried either: a half-consumed
stream cannot be replayed safely.

Load balancing: ``round_robin`` spreads calls over every address the resolver
returns, e.g. all replicas behind ``dns:///bertdot.svc:50051``; with one
address it behaves like ``pick_first``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2_grpc

from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

SERVICE = "bertdot.v1.Retrieval"
READ_METHODS = (
    (SERVICE, "Search"),
    (SERVICE, "Encode"),
    (SERVICE, "Rerank"),
    (SERVICE, "Info"),
    ("grpc.health.v1.Health", "Check"),
)

Pem = bytes | str | PathLike[str]


@dataclass(frozen=True)
class ChannelConfig:
    """How to reach the server. PEM arguments are the bytes themselves or a file path."""

    target: str = "localhost:50051"
    tls: bool = False
    root_certificates: Pem | None = None
    client_certificate: Pem | None = None
    client_key: Pem | None = None
    token: str | None = None
    max_attempts: int = 4
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    keepalive_s: float | None = None
    max_message_bytes: int = 64 * 1024 * 1024
    # TCP connections that calls are spread over, round-robin. A server of several worker
    # processes on one port (`bertdot serve --workers N`) gets each connection to one
    # worker, so one connection uses one worker.
    connections: int = 1
    options: Sequence[tuple[str, Any]] = ()

    def __post_init__(self) -> None:
        if self.connections < 1:
            raise ValueError(f"connections must be at least 1, got {self.connections}")


def service_config(cfg: ChannelConfig) -> str:
    """The default service config JSON: round_robin, plus retries on read methods."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if cfg.max_attempts > 1:
        policy = {
            "maxAttempts": min(cfg.max_attempts, 5),  # gRPC caps attempts at 5
            "initialBackoff": f"{cfg.initial_backoff_s}s",
            "maxBackoff": f"{cfg.max_backoff_s}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
        names = [{"service": s, "method": m} for s, m in READ_METHODS]
        config["methodConfig"] = [{"name": names, "retryPolicy": policy}]
    return json.dumps(config)


def channel_options(cfg: ChannelConfig) -> list[tuple[str, Any]]:
    options: list[tuple[str, Any]] = [
        ("grpc.service_config", service_config(cfg)),
        ("grpc.enable_retries", 1 if cfg.max_attempts > 1 else 0),
        ("grpc.max_receive_message_length", cfg.max_message_bytes),
        ("grpc.max_send_message_length", cfg.max_message_bytes),
    ]
    if cfg.keepalive_s is not None:
        # Off by default: a server that does not allow pings this often answers
        # GOAWAY "too_many_pings" (its grpc.http2.min_recv_ping_interval_without_data_ms).
        options += [
            ("grpc.keepalive_time_ms", int(cfg.keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    if cfg.connections > 1:  # channels to one target otherwise share one connection
        options.append(("grpc.use_local_subchannel_pool", 1))
    return options + list(cfg.options)


class Stubs:
    """The service's stubs over a client's channels, handed out round-robin (one per
    connection), and the health stub of the first channel."""

    def __init__(self, channels: Sequence[Any]) -> None:
        self._stubs = [pb_grpc.RetrievalStub(c) for c in channels]
        self._turn = itertools.count()
        self.health = health_pb2_grpc.HealthStub(channels[0])

    def next(self) -> pb_grpc.RetrievalStub:
        return self._stubs[next(self._turn) % len(self._stubs)]


def _read_pem(value: Pem | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def channel_credentials(cfg: ChannelConfig) -> grpc.ChannelCredentials:
    """TLS credentials; without root certificates the system roots are used."""
    return grpc.ssl_channel_credentials(
        root_certificates=_read_pem(cfg.root_certificates),
        private_key=_read_pem(cfg.client_key),
        certificate_chain=_read_pem(cfg.client_certificate),
    )


def bearer_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def _with_metadata(details: Any, extra: tuple[tuple[str, str], ...]) -> Any:
    """Copy of the call details with ``extra`` metadata appended (sync and aio alike)."""
    return details._replace(metadata=(*tuple(details.metadata or ()), *extra))


class _MetadataInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds fixed metadata (the bearer token) to every sync call.

    An interceptor rather than call credentials: gRPC refuses to send call
    credentials over a plaintext channel, and a token is often checked by a
    sidecar that terminates TLS in front of a plaintext server.
    """

    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _call(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_metadata(details, self._metadata), request)

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call


def _aio_interceptors(metadata: tuple[tuple[str, str], ...]) -> list[Any]:
    """grpc.aio files each interceptor under one kind only, so one instance per kind."""

    async def call(self: Any, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_metadata(details, metadata), request)

    kinds = (
        (grpc.aio.UnaryUnaryClientInterceptor, "intercept_unary_unary"),
        (grpc.aio.UnaryStreamClientInterceptor, "intercept_unary_stream"),
        (grpc.aio.StreamUnaryClientInterceptor, "intercept_stream_unary"),
        (grpc.aio.StreamStreamClientInterceptor, "intercept_stream_stream"),
    )
    return [type(f"_Aio{base.__name__}", (base,), {name: call})() for base, name in kinds]


def create_channel(cfg: ChannelConfig) -> grpc.Channel:
    options = channel_options(cfg)
    if cfg.tls:
        channel = grpc.secure_channel(cfg.target, channel_credentials(cfg), options=options)
    else:
        channel = grpc.insecure_channel(cfg.target, options=options)
    metadata = bearer_metadata(cfg.token)
    return grpc.intercept_channel(channel, _MetadataInterceptor(metadata)) if metadata else channel


def create_aio_channel(cfg: ChannelConfig) -> grpc.aio.Channel:
    options = channel_options(cfg)
    metadata = bearer_metadata(cfg.token)
    interceptors = _aio_interceptors(metadata) if metadata else None
    if cfg.tls:
        return grpc.aio.secure_channel(
            cfg.target, channel_credentials(cfg), options=options, interceptors=interceptors
        )
    return grpc.aio.insecure_channel(cfg.target, options=options, interceptors=interceptors)
