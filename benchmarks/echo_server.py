"""A gRPC server with bertdot's wire contract that does no work: every search is answered at
once with the same ten hits (ids, scores, titles, stats, timings, as the real server answers
k=10 without text). `benchmarks/server.py` loads it with the same `bertdot bench` client to
measure the floor of the round trip on this machine: what the RPC and the load generator
cost before the server does anything.

    python benchmarks/echo_server.py --port 50099
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc

HITS = [
    pb.Hit(id=f"passage-{i:06d}", score=30.0 - i, title=f"Title of passage {i}") for i in range(10)
]


def answer(request: pb.SearchRequest) -> pb.SearchResponse:
    return pb.SearchResponse(
        id=request.id,
        hits=HITS,
        stats=pb.QueryStats(token_count=12, truncated=False),
        timings=pb.Timings(total_us=1, batch_size=1),
    )


class Echo(pb_grpc.RetrievalServicer):
    async def Search(self, request: pb.SearchRequest, context: Any) -> pb.SearchResponse:
        return answer(request)

    async def SearchStream(
        self, request_iterator: AsyncIterator[pb.SearchRequest], context: Any
    ) -> AsyncIterator[pb.SearchResponse]:
        async for request in request_iterator:
            yield answer(request)


async def serve(host: str, port: int) -> None:
    server = grpc.aio.server()
    pb_grpc.add_RetrievalServicer_to_server(Echo(), server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await checks.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
