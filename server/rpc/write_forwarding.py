"""Writes that reach a worker without the index's writer lock go to the worker that has it.

Several serving processes share one port (`bertdot serve --workers N`) and one index: the
first holds the writer lock, the others are read-only replicas following the store. A
replica passes Upsert and Delete on, unchanged, over a private local socket, then waits
until its own graph holds the acknowledged write, so a client reads its own writes on its
connection. The writer's status and message reach the client unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from bertdot.server.engine.follow import Follower
from bertdot.server.rpc.status import Forwarded
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

Response = TypeVar("Response", pb.UpsertResponse, pb.DeleteResponse)


class WriteForwarder:
    def __init__(
        self, address: str, token: str | None, follower: Follower, max_message_bytes: int
    ) -> None:
        self.address = address
        self.follower = follower
        self._channel = grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", max_message_bytes),
                ("grpc.max_send_message_length", max_message_bytes),
                # A restarted writer is back within seconds: retry the socket at most every
                # second, not on gRPC's default backoff that grows to two minutes.
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self._stub = pb_grpc.RetrievalStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    async def upsert(self, request: pb.UpsertRequest, deadline: float | None) -> pb.UpsertResponse:
        return await self._forward(self._stub.Upsert, request, deadline)

    async def delete(self, request: pb.DeleteRequest, deadline: float | None) -> pb.DeleteResponse:
        return await self._forward(self._stub.Delete, request, deadline)

    async def _forward(
        self, method: Callable[..., Awaitable[Response]], request: Any, deadline: float | None
    ) -> Response:
        timeout = None if deadline is None else max(deadline - asyncio.get_running_loop().time(), 0)
        try:
            response = await method(request, timeout=timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            message = err.details() or ""
            if err.code() is grpc.StatusCode.UNAVAILABLE:
                message = f"the index's writer worker is unavailable (restarting?): {message}"
            raise Forwarded(err.code(), message) from None
        await self.follower.reach(response.sequence)
        return response

    async def close(self) -> None:
        await self._channel.close()
