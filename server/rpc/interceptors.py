"""One interceptor for what every RPC shares: authentication, the error table, metrics."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from bertdot.server.rpc.metrics import ServerMetrics
from bertdot.server.rpc.status import status_for

log = logging.getLogger(__name__)

SERVICE_PREFIX = "/bertdot.v1.Retrieval/"
# Probes and tooling that must reach the server without the bearer token: health (load
# balancers and orchestrators probe it without credentials) and reflection (it tells only
# what the public proto already says: service and message names, never data).
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


class ServingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: ServerMetrics, token: str | None = None) -> None:
        self._metrics = metrics
        self._expected = f"Bearer {token}".encode() if token else None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        if self._expected is not None and not self._authorized(details):
            if method.startswith(SERVICE_PREFIX):
                self._metrics.requests.labels(
                    method.removeprefix(SERVICE_PREFIX), "UNAUTHENTICATED"
                ).inc()
            return _refusal(handler, "missing or wrong bearer token")
        if method.startswith(SERVICE_PREFIX):
            return self._wrap(handler, method.removeprefix(SERVICE_PREFIX))
        return handler

    def _authorized(self, details: grpc.HandlerCallDetails) -> bool:
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                return hmac.compare_digest(given, self._expected or b"")
        return False

    def _wrap(self, handler: grpc.RpcMethodHandler, name: str) -> grpc.RpcMethodHandler:
        metrics = self._metrics

        async def fail(exc: BaseException, context: grpc.aio.ServicerContext) -> None:
            code, message = status_for(exc)
            if code is grpc.StatusCode.INTERNAL:
                log.error("%s failed", name, exc_info=exc)
            metrics.requests.labels(name, code.name).inc()
            await context.abort(code, message)

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started = time.perf_counter()
                try:
                    response = await inner(request, context)
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    await fail(exc, context)
                    raise  # not reached: abort raises
                finally:
                    metrics.latency.labels(name).observe(time.perf_counter() - started)
                metrics.requests.labels(name, "OK").inc()
                return response

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            inner_stream = handler.stream_stream

            async def stream(
                requests: Any, context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                try:
                    async for response in inner_stream(requests, context):
                        yield response
                except (asyncio.CancelledError, grpc.aio.AbortError):
                    raise
                except Exception as exc:
                    await fail(exc, context)
                metrics.requests.labels(name, "OK").inc()

            return grpc.stream_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape that answers UNAUTHENTICATED without running the method."""

    async def deny(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def deny_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(deny_stream, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(deny_stream, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
