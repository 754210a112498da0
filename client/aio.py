"""The asyncio client: the same calls as ``Client``, awaitable.

Streaming search runs a writer task that takes an ``asyncio.Semaphore`` slot
before writing each query; the reader gives a slot back per answer. The
writer therefore awaits (and stops pulling from the caller's iterable) while
``max_in_flight`` queries are unanswered: back-pressure reaches the producer.
Create the client inside the event loop that will use it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from bertdot.client import types as t
from bertdot.client.channel import ChannelConfig, Stubs, create_aio_channel
from bertdot.client.errors import BertdotError, from_rpc_error
from bertdot.client.sync import DEFAULT_K
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

Queries = Iterable[str | t.Query] | AsyncIterable[str | t.Query]


async def _aiter(items: Queries) -> AsyncIterator[str | t.Query]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


class AsyncClient:
    """Asyncio client; arguments as for ``Client``. Use ``async with`` or ``await close()``."""

    def __init__(
        self, target: str = "localhost:50051", *, timeout: float | None = 30.0, **channel: Any
    ) -> None:
        self.config = ChannelConfig(target=target, **channel)
        self.timeout = timeout
        self._channels = [create_aio_channel(self.config) for _ in range(self.config.connections)]
        self._stubs = Stubs(self._channels)
        self._health = self._stubs.health

    @property
    def _stub(self) -> pb_grpc.RetrievalStub:
        """The next connection's stub (round-robin over `connections`)."""
        return self._stubs.next()

    async def close(self) -> None:
        await asyncio.gather(*(channel.close() for channel in self._channels))

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _deadline(self, timeout: float | None) -> float | None:
        return timeout if timeout is not None else self.timeout

    async def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await method(request, timeout=self._deadline(timeout))
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    async def search(
        self,
        query: str,
        *,
        k: int = DEFAULT_K,
        ef: int | None = None,
        return_text: bool = False,
        timeout: float | None = None,
    ) -> t.SearchResult:
        request = t.search_request(query, "", k, ef, return_text)
        return t.search_result_from_proto(await self._unary(self._stub.Search, request, timeout))

    async def search_stream(
        self,
        queries: Queries,
        *,
        k: int = DEFAULT_K,
        ef: int | None = None,
        return_text: bool = False,
        max_in_flight: int = 64,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> AsyncIterator[t.SearchResult | BertdotError]:
        """Search every query over one stream; yield answers as they complete.

        Same contract as ``Client.search_stream`` (no default deadline);
        ``queries`` may also be an async iterable. When stopping early, close
        the generator (``contextlib.aclosing``) so the stream ends at once.
        """
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        slots = asyncio.Semaphore(max_in_flight)
        call = self._stub.SearchStream(timeout=timeout)
        producer_error: list[BaseException] = []

        async def writer() -> None:
            position = 0
            try:
                async for query in _aiter(queries):
                    await slots.acquire()
                    request = t.search_request(query, str(position), k, ef, return_text)
                    position += 1
                    await call.write(request)
                await call.done_writing()
            except (grpc.RpcError, asyncio.InvalidStateError):
                return  # the call ended; the reader reports its status
            except Exception as err:  # the caller's iterable failed: end the stream with it
                producer_error.append(err)
                call.cancel()

        writing = asyncio.create_task(writer())
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    break
                slots.release()
                item = t.stream_item_from_proto(response)
                if isinstance(item, BertdotError) and not return_exceptions:
                    raise item
                yield item
            await writing
        except (grpc.RpcError, asyncio.CancelledError) as err:
            if producer_error:
                raise producer_error[0] from None
            if isinstance(err, grpc.RpcError):
                raise from_rpc_error(err) from err
            raise
        finally:
            writing.cancel()
            call.cancel()
        if producer_error:
            raise producer_error[0]

    async def search_many(
        self,
        queries: Sequence[str | t.Query],
        *,
        k: int = DEFAULT_K,
        ef: int | None = None,
        return_text: bool = False,
        max_in_flight: int = 64,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> list[t.SearchResult | BertdotError]:
        """Search all queries pipelined over one stream; answers in input order."""
        wire, caller_ids = t.numbered_queries(queries)
        results: list[Any] = [None] * len(wire)
        async for item in self.search_stream(
            wire,
            k=k,
            ef=ef,
            return_text=return_text,
            max_in_flight=max_in_flight,
            timeout=timeout,
            return_exceptions=return_exceptions,
        ):
            results[t.position_of(item)] = t.with_caller_id(item, caller_ids)
        return results

    async def encode(self, texts: Sequence[str], *, timeout: float | None = None) -> t.EncodeResult:
        request = pb.EncodeRequest(texts=list(texts))
        return t.encode_result_from_proto(await self._unary(self._stub.Encode, request, timeout))

    async def rerank(
        self,
        query: str,
        candidates: Iterable[str | t.PassageRef],
        *,
        top_k: int = 0,
        return_text: bool = False,
        timeout: float | None = None,
    ) -> t.RerankResult:
        request = t.rerank_request(query, candidates, top_k, return_text)
        return t.rerank_result_from_proto(await self._unary(self._stub.Rerank, request, timeout))

    async def info(self, *, timeout: float | None = None) -> t.Info:
        return t.info_from_proto(await self._unary(self._stub.Info, pb.InfoRequest(), timeout))

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._unary(self._health.Check, request, timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    async def upsert(
        self, passages: Iterable[t.Passage | Mapping[str, str]], *, timeout: float | None = None
    ) -> t.UpsertResult:
        """Add or replace passages; never retried."""
        request = t.upsert_request(passages)
        return t.upsert_result_from_proto(await self._unary(self._stub.Upsert, request, timeout))

    async def delete(self, ids: Iterable[str], *, timeout: float | None = None) -> t.DeleteResult:
        """Remove passages by id; never retried."""
        request = pb.DeleteRequest(ids=list(ids))
        return t.delete_result_from_proto(await self._unary(self._stub.Delete, request, timeout))
