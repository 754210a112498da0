"""Undecodable request messages → INVALID_ARGUMENT, not UNKNOWN or INTERNAL; oversized ones
→ RESOURCE_EXHAUSTED through the same table, so they are counted and logged like the rest.

grpcio answers a request whose bytes do not parse (truncated, corrupt, a string field that
is not UTF-8) with UNKNOWN and the parser's exception text for unary calls, and a stream
fails with INTERNAL. Both misstate what happened: the caller sent bad input. This
interceptor makes the deserializer return a marker instead of raising; the handler then
raises `InvalidArgument`, which the serving interceptor maps with the one error table.
It must be listed after `ServingInterceptor`, so that it wraps the servicer directly.

The message-size limit (`--max-message-bytes`) is checked here too: gRPC's own check refuses
a large message before any handler runs, so its refusals reached no metric. gRPC's limit
is set to a multiple of ours (`WIRE_LIMIT_FACTOR`) as a backstop against huge messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from bertdot.server.errors import InvalidArgument, TooLarge
from bertdot.server.rpc.interceptors import SERVICE_PREFIX


class Undecodable:
    """Stands in for a request message whose bytes could not be parsed."""

    def __init__(self, method: str) -> None:
        self.method = method

    def error(self) -> InvalidArgument:
        return InvalidArgument(
            f"{self.method}: the request is not a valid protobuf message (truncated or "
            "corrupt bytes, or a string field that is not UTF-8)"
        )


class Oversized:
    """Stands in for a request message larger than the server accepts."""

    def __init__(self, method: str, size: int, limit: int) -> None:
        self.method, self.size, self.limit = method, size, limit

    def error(self) -> TooLarge:
        return TooLarge(
            f"{self.method}: the request message of {self.size:,} bytes exceeds the limit "
            f"of {self.limit:,} (--max-message-bytes)"
        )


WIRE_LIMIT_FACTOR = 4  # gRPC refuses beyond this many times our limit (uncounted)


class DecodeGuard(grpc.aio.ServerInterceptor):
    def __init__(self, max_message_bytes: int) -> None:
        self._limit = max_message_bytes
        # The servicer's handler of a method is one object for the server's life, so its
        # guarded version is built once per method, not once per call.
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or not method.startswith(SERVICE_PREFIX):
            return handler
        if handler.request_deserializer is None:
            return handler
        cached = self._guarded.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        guarded = _guard(handler, method.removeprefix(SERVICE_PREFIX), self._limit)
        self._guarded[method] = (handler, guarded)
        return guarded


def _guard(handler: grpc.RpcMethodHandler, name: str, limit: int) -> grpc.RpcMethodHandler:
    deserialize = _lenient(handler.request_deserializer, name, limit)
    kwargs = {
        "request_deserializer": deserialize,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, (Undecodable, Oversized)):
                raise request.error()
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
    if handler.stream_stream is not None:
        inner_stream = handler.stream_stream

        async def stream(requests: Any, context: Any) -> AsyncIterator[Any]:
            async for response in inner_stream(_checked(requests), context):
                yield response

        return grpc.stream_stream_rpc_method_handler(stream, **kwargs)
    return handler


def _lenient(
    deserialize: Callable[[bytes], Any], method: str, limit: int
) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        if len(raw) > limit:
            return Oversized(method, len(raw), limit)
        try:
            return deserialize(raw)
        except DecodeError:
            return Undecodable(method)

    return parse


async def _checked(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A broken frame ends the whole stream: the messages after it cannot be trusted."""
    async for request in requests:
        if isinstance(request, (Undecodable, Oversized)):
            raise request.error()
        yield request
