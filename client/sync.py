"""The blocking client.

Streaming search keeps at most ``max_in_flight`` queries unanswered: the
request iterator that gRPC drains in its own thread takes a semaphore slot
before each query and every answer gives one back, so a producer of millions
of queries holds only that many in the server's queues at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2

from bertdot.client import types as t
from bertdot.client.channel import ChannelConfig, Stubs, create_channel
from bertdot.client.errors import BertdotError, from_rpc_error
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

DEFAULT_K = 10


class Client:
    """Sync client of one bertdot service (or several replicas behind one target).

    ``timeout`` is the default deadline, in seconds, of every call (for streams:
    of the whole stream); each method can override it. Other keyword arguments
    are those of ``ChannelConfig`` (tls, root_certificates, client_certificate,
    client_key, token, max_attempts, keepalive_s, ...). Use as a context manager
    or call ``close()``.
    """

    def __init__(
        self, target: str = "localhost:50051", *, timeout: float | None = 30.0, **channel: Any
    ) -> None:
        self.config = ChannelConfig(target=target, **channel)
        self.timeout = timeout
        self._channels = [create_channel(self.config) for _ in range(self.config.connections)]
        self._stubs = Stubs(self._channels)
        self._health = self._stubs.health

    @property
    def _stub(self) -> pb_grpc.RetrievalStub:
        """The next connection's stub (round-robin over `connections`)."""
        return self._stubs.next()

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unary(self, method: Any, request: Any, timeout: float | None) -> Any:
        try:
            return method(request, timeout=timeout if timeout is not None else self.timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def search(
        self,
        query: str,
        *,
        k: int = DEFAULT_K,
        ef: int | None = None,
        return_text: bool = False,
        timeout: float | None = None,
    ) -> t.SearchResult:
        request = t.search_request(query, "", k, ef, return_text)
        return t.search_result_from_proto(self._unary(self._stub.Search, request, timeout))

    def search_stream(
        self,
        queries: Iterable[str | t.Query],
        *,
        k: int = DEFAULT_K,
        ef: int | None = None,
        return_text: bool = False,
        max_in_flight: int = 64,
        timeout: float | None = None,
        return_exceptions: bool = False,
    ) -> Iterator[t.SearchResult | BertdotError]:
        """Search every query over one stream; yield answers as they complete.

        A plain str query gets its position as id (``"0"``, ``"1"``, ...). A query
        that fails alone raises its typed error (ending the iteration), or with
        ``return_exceptions`` is yielded as that error (``.query_id`` says which).
        An exception raised by ``queries`` itself ends the stream and is re-raised.
        ``timeout`` bounds the whole stream; unlike unary calls there is no
        default deadline, since a long stream is not a slow one.
        """
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        slots = threading.Semaphore(max_in_flight)
        stop = threading.Event()
        producer_error: list[BaseException] = []
        calls: list[Any] = []

        def requests() -> Iterator[pb.SearchRequest]:
            try:
                for position, query in enumerate(queries):
                    while not slots.acquire(timeout=0.05):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    yield t.search_request(query, str(position), k, ef, return_text)
            except Exception as err:  # the caller's iterable failed: end the stream with it
                producer_error.append(err)
                stop.set()
                if calls:
                    calls[0].cancel()

        call = self._stub.SearchStream(requests(), timeout=timeout)
        calls.append(call)
        try:
            for response in call:
                slots.release()
                item = t.stream_item_from_proto(response)
                if isinstance(item, BertdotError) and not return_exceptions:
                    raise item
                yield item
        except grpc.RpcError as err:
            if producer_error:
                raise producer_error[0] from None
            raise from_rpc_error(err) from err
        finally:
            stop.set()
            call.cancel()
        if producer_error:
            raise producer_error[0]

    def search_many(
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
        """Search all queries pipelined over one stream; answers in input order.

        Errors and ``timeout`` as in ``search_stream``. Each result keeps its
        ``Query.id`` if one was given, else its position.
        """
        wire, caller_ids = t.numbered_queries(queries)
        results: list[Any] = [None] * len(wire)
        for item in self.search_stream(
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

    def encode(self, texts: Sequence[str], *, timeout: float | None = None) -> t.EncodeResult:
        request = pb.EncodeRequest(texts=list(texts))
        return t.encode_result_from_proto(self._unary(self._stub.Encode, request, timeout))

    def rerank(
        self,
        query: str,
        candidates: Iterable[str | t.PassageRef],
        *,
        top_k: int = 0,
        return_text: bool = False,
        timeout: float | None = None,
    ) -> t.RerankResult:
        """Score candidates (texts, or ``PassageRef`` ids in the index) by descending score."""
        request = t.rerank_request(query, candidates, top_k, return_text)
        return t.rerank_result_from_proto(self._unary(self._stub.Rerank, request, timeout))

    def info(self, *, timeout: float | None = None) -> t.Info:
        return t.info_from_proto(self._unary(self._stub.Info, pb.InfoRequest(), timeout))

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The standard health status name, e.g. ``"SERVING"`` or ``"NOT_SERVING"``."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._unary(self._health.Check, request, timeout)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)

    def upsert(
        self, passages: Iterable[t.Passage | Mapping[str, str]], *, timeout: float | None = None
    ) -> t.UpsertResult:
        """Add or replace passages; never retried (a lost answer may hide an applied write)."""
        request = t.upsert_request(passages)
        return t.upsert_result_from_proto(self._unary(self._stub.Upsert, request, timeout))

    def delete(self, ids: Iterable[str], *, timeout: float | None = None) -> t.DeleteResult:
        """Remove passages by id; never retried."""
        request = pb.DeleteRequest(ids=list(ids))
        return t.delete_result_from_proto(self._unary(self._stub.Delete, request, timeout))
