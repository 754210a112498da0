"""A controllable in-process bertdot server for client tests.

Real gRPC on 127.0.0.1, port 0, with behaviour set by attributes:
``fail_unavailable[method] = n`` fails the next n calls with UNAVAILABLE;
``calls[method]`` counts calls; ``metadata[method]`` keeps the last call's
metadata. Queries: ``""`` is INVALID_ARGUMENT, ``"slow"`` sleeps
``slow_s`` seconds. SearchStream reads ahead of its answers (as a batching
server would) and answers each batch in reverse arrival order, and records
``max_in_flight``: the most queries received but not yet answered.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

DIM = 4


class FakeRetrieval(pb_grpc.RetrievalServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.fail_unavailable: Counter[str] = Counter()
        self.metadata: dict[str, dict[str, str]] = {}
        self.slow_s = 1.0
        self.answer_delay_s = 0.0
        self.max_in_flight = 0
        self.read_only = False
        self.store: dict[str, pb.Passage] = {}

    def _enter(self, method: str, context: grpc.ServicerContext) -> None:
        """Count the call and fail it while its UNAVAILABLE budget lasts."""
        with self.lock:
            self.calls[method] += 1
            self.metadata[method] = dict(context.invocation_metadata())
            fail = self.fail_unavailable[method] > 0
            if fail:
                self.fail_unavailable[method] -= 1
        if fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")

    def _answer(self, request: pb.SearchRequest) -> pb.SearchResponse:
        if request.query == "slow":
            time.sleep(self.slow_s)
        k = request.k or 10
        hits = [
            pb.Hit(
                id=f"p{i}",
                score=float(len(request.query) - i),
                title=f"title {i}",
                text=f"text {i}" if request.return_text else "",
            )
            for i in range(k)
        ]
        return pb.SearchResponse(
            id=request.id,
            hits=hits,
            stats=pb.QueryStats(token_count=len(request.query.split()) + 2, truncated=False),
            timings=pb.Timings(encode_us=request.ef if request.HasField("ef") else 7, total_us=9),
        )

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Search", context)
        if not request.query:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty query")
        return self._answer(request)

    def SearchStream(self, request_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._enter("SearchStream", context)
        arrived: queue.Queue[pb.SearchRequest | None] = queue.Queue()
        counts = {"received": 0, "answered": 0}

        def read_ahead() -> None:
            try:
                for request in request_iterator:
                    with self.lock:
                        counts["received"] += 1
                        in_flight = counts["received"] - counts["answered"]
                        self.max_in_flight = max(self.max_in_flight, in_flight)
                    arrived.put(request)
            except grpc.RpcError:
                pass  # the client cancelled the stream
            finally:
                arrived.put(None)

        threading.Thread(target=read_ahead, daemon=True).start()
        finished = False
        while not finished and context.is_active():
            batch = [arrived.get()]
            while not arrived.empty():
                batch.append(arrived.get_nowait())
            finished = batch[-1] is None
            for request in reversed([r for r in batch if r is not None]):
                if self.answer_delay_s:
                    time.sleep(self.answer_delay_s)
                if request.query:
                    response = self._answer(request)
                else:
                    response = pb.SearchResponse(
                        id=request.id, error=pb.Error(code=3, message="empty query")
                    )
                with self.lock:  # counted before sending: in flight never reads too high
                    counts["answered"] += 1
                yield response

    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Encode", context)
        if not request.texts:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no texts")
        return pb.EncodeResponse(
            id=request.id,
            embeddings=[
                pb.Embedding(values=[len(s), i, 0.5, -1.0]) for i, s in enumerate(request.texts)
            ],
            stats=[pb.QueryStats(token_count=len(s), truncated=len(s) > 20) for s in request.texts],
            dim=DIM,
            timings=pb.Timings(batch_size=len(request.texts)),
        )

    def Rerank(self, request: pb.RerankRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Rerank", context)
        scored = []
        for index, c in enumerate(request.candidates):
            if c.WhichOneof("source") == "passage_id":
                if c.passage_id not in self.store:
                    context.abort(grpc.StatusCode.NOT_FOUND, f"unknown passage {c.passage_id}")
                text, pid = self.store[c.passage_id].text, c.passage_id
            else:
                text, pid = c.text, ""
            score = float(len(set(text.split()) & set(request.query.split())))
            scored.append(
                pb.Scored(
                    index=index,
                    passage_id=pid,
                    score=score,
                    text=text if request.return_text else "",
                )
            )
        scored.sort(key=lambda s: -s.score)
        return pb.RerankResponse(
            results=scored[: request.top_k or None],
            query_stats=pb.QueryStats(token_count=5),
            candidates_encoded=sum(1 for c in request.candidates if c.HasField("text")),
        )

    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Info", context)
        return pb.InfoResponse(
            model=pb.ModelInfo(source="fake/model", dim=DIM, pooling="cls", similarity="dot"),
            index=pb.IndexInfo(size=len(self.store), m=16, ef_construction=200, default_ef=64),
            server_version="fake-1",
        )

    def Upsert(self, request: pb.UpsertRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Upsert", context)
        if self.read_only:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "read-only index")
        for passage in request.passages:
            self.store[passage.id] = passage
        return pb.UpsertResponse(upserted=len(request.passages), sequence=self.calls["Upsert"])

    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> Any:
        self._enter("Delete", context)
        missing = [i for i in request.ids if i not in self.store]
        for i in request.ids:
            self.store.pop(i, None)
        return pb.DeleteResponse(
            deleted=len(request.ids) - len(missing), not_found=missing, sequence=9
        )


def start(servicer: FakeRetrieval | None = None) -> tuple[grpc.Server, int, FakeRetrieval]:
    """Start a fake server on a free loopback port; the caller stops it."""
    servicer = servicer or FakeRetrieval()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    pb_grpc.add_RetrievalServicer_to_server(servicer, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port, servicer
