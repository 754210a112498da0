"""The gRPC servicer: converts requests, calls the core, converts answers. Nothing else.

Errors raised here are mapped to status codes by `ServingInterceptor`; per-item errors of
the streaming methods are mapped with the same table into the item's `error` field.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from bertdot.server.engine.answers import Timings
from bertdot.server.engine.retriever import Retriever
from bertdot.server.errors import NotReady
from bertdot.server.rpc import codec
from bertdot.server.rpc.metrics import ServerMetrics
from bertdot.server.rpc.status import status_for
from bertdot.server.rpc.write_forwarding import WriteForwarder
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


class RetrievalService(pb_grpc.RetrievalServicer):
    def __init__(self, metrics: ServerMetrics, version: str) -> None:
        self.core: Retriever | None = None  # set once the model is warm and the index loaded
        self.draining = False
        self.metrics = metrics
        self.version = version
        self.info_response: pb.InfoResponse | None = None
        self.writes_to: WriteForwarder | None = None  # a replica worker: the writer worker

    def _core(self) -> Retriever:
        if self.draining:
            raise NotReady("server is shutting down")
        if self.core is None:
            raise NotReady("server is still loading the model and index")
        return self.core

    def _observe(self, method: str, t: Timings) -> None:
        self.metrics.observe_stages(
            method,
            queue=t.queue_us,
            tokenize=t.tokenize_us,
            encode=t.encode_us,
            search=t.search_us,
        )

    async def Search(self, request: pb.SearchRequest, context: Any) -> pb.SearchResponse:
        return await self._search(request, deadline_of(context), "Search")

    async def _search(
        self, request: pb.SearchRequest, deadline: float | None, method: str
    ) -> pb.SearchResponse:
        answer = await self._core().search(
            request.query, request.k, codec.ef_of(request), request.return_text, deadline
        )
        self._observe(method, answer.timings)
        return codec.search_response(answer, request.id)

    async def SearchStream(
        self, request_iterator: AsyncIterator[pb.SearchRequest], context: Any
    ) -> AsyncIterator[pb.SearchResponse]:
        deadline = deadline_of(context)

        async def answer(request: pb.SearchRequest) -> pb.SearchResponse:
            try:
                return await self._search(request, deadline, "SearchStream")
            except Exception as exc:
                code, message = status_for(exc)
                return pb.SearchResponse(id=request.id, error=codec.error(code.value[0], message))

        async for response in _fan_out(request_iterator, answer):
            yield response

    async def Encode(self, request: pb.EncodeRequest, context: Any) -> pb.EncodeResponse:
        return await self._encode(request, deadline_of(context), "Encode")

    async def _encode(
        self, request: pb.EncodeRequest, deadline: float | None, method: str
    ) -> pb.EncodeResponse:
        answer = await self._core().encode(list(request.texts), deadline)
        self._observe(method, answer.timings)
        return codec.encode_response(answer, request.id)

    async def EncodeStream(
        self, request_iterator: AsyncIterator[pb.EncodeRequest], context: Any
    ) -> AsyncIterator[pb.EncodeResponse]:
        deadline = deadline_of(context)

        async def answer(request: pb.EncodeRequest) -> pb.EncodeResponse:
            try:
                return await self._encode(request, deadline, "EncodeStream")
            except Exception as exc:
                code, message = status_for(exc)
                return pb.EncodeResponse(id=request.id, error=codec.error(code.value[0], message))

        async for response in _fan_out(request_iterator, answer):
            yield response

    async def Rerank(self, request: pb.RerankRequest, context: Any) -> pb.RerankResponse:
        answer = await self._core().rerank(
            request.query,
            codec.candidates(request),
            request.top_k,
            request.return_text,
            deadline_of(context),
        )
        self._observe("Rerank", answer.timings)
        return codec.rerank_response(answer)

    async def Info(self, request: pb.InfoRequest, context: Any) -> pb.InfoResponse:
        core = self._core()
        response = pb.InfoResponse()
        response.CopyFrom(self.info_response or pb.InfoResponse())
        if core.index is not None:
            response.index.size = core.index.count
            response.index.sequence = core.index.sequence
            response.index.read_only = core.read_only and self.writes_to is None
        return response

    async def Upsert(self, request: pb.UpsertRequest, context: Any) -> pb.UpsertResponse:
        core = self._core()  # refuses while loading or draining, forwarded or not
        if self.writes_to is not None:
            return await self.writes_to.upsert(request, deadline_of(context))
        answer = await core.writes.upsert(codec.passages(request), deadline_of(context))
        self.metrics.observe_stages("Upsert", encode=answer.encode_us, apply=answer.apply_us)
        return codec.upsert_response(answer)

    async def Delete(self, request: pb.DeleteRequest, context: Any) -> pb.DeleteResponse:
        core = self._core()
        if self.writes_to is not None:
            return await self.writes_to.delete(request, deadline_of(context))
        answer = await core.writes.delete(list(request.ids), deadline_of(context))
        return codec.delete_response(answer)


async def _fan_out(
    requests: AsyncIterator[Any], answer: Callable[[Any], Awaitable[Any]]
) -> AsyncIterator[Any]:
    """Answer each streamed request concurrently; yield answers in completion order.

    Every request gets exactly one answer; when the client half-closes, the stream ends
    after the last answer. Cancelling the stream cancels the work still in flight.
    """
    done: asyncio.Queue[Any] = asyncio.Queue()
    in_flight: set[asyncio.Task[None]] = set()
    end = object()

    async def run(request: Any) -> None:
        await done.put(await answer(request))

    async def read() -> None:
        try:
            async for request in requests:
                task = asyncio.create_task(run(request))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if in_flight:
                await asyncio.gather(*list(in_flight))
        finally:
            await done.put(end)

    reader = asyncio.create_task(read())
    try:
        while (item := await done.get()) is not end:
            yield item
        await reader  # surfaces a broken request stream as the RPC's error
    finally:
        reader.cancel()
        for task in list(in_flight):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reader
