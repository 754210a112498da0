"""The closed-loop load client every serving contender gets: one query per request, the next
sent when the answer is in. Loopback only; prints one JSON line.

    load.py --contender triton --target 127.0.0.1:PORT --queries FILE --mode c1 --n 100
    load.py --contender infinity --target http://127.0.0.1:PORT ... --mode concurrent \
            --clients 16 --procs 2 --duration 5 --server-pid PID
    load.py --contender bertdot --target 127.0.0.1:PORT ... --mode vectors --out V.npy

Modes: `c1`, one client timing `--n` requests after a warm-up; `concurrent`, `--clients`
closed-loop clients, each with its own connection, split over `--procs` processes (threads
inside each, so that one client process's GIL does not cap the server), for `--duration`
seconds from a common start; `vectors`, one vector per query through the contender's encoding
call (bertdot's Encode; the peers' only call), saved as .npy for the check against
sentence-transformers. Client k starts at query k and steps by the client count, so every
query is in play. `--server-pid` lets the CPU record separate the server from everything else.

Run it with an interpreter that has the contender's client library: the project's for bertdot
(grpcio and the generated stubs) and infinity (stdlib HTTP), PyTriton's venv for Triton.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import queue
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

import numpy as np
from machine import Meter, Window

K = 10
# One TCP connection per client, as separate clients would have: without this, grpc shares
# one connection among the channels of a process that have the same target and options.
GRPC_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]
CALL_TIMEOUT_S = 60.0


class Client(Protocol):
    def query(self, text: str) -> object: ...  # what is timed: one query's full request

    def embed(self, text: str) -> np.ndarray: ...  # the vector of one text

    def close(self) -> None: ...


class InfinityHttp:
    """infinity-emb's OpenAI-style API over one keep-alive HTTP/1.1 connection."""

    def __init__(self, target: str) -> None:
        url = urlparse(target)
        self.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=CALL_TIMEOUT_S)

    def embed(self, text: str) -> np.ndarray:
        body = json.dumps({"model": "minilm", "input": [text]})
        self.conn.request("POST", "/embeddings", body, {"Content-Type": "application/json"})
        response = self.conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
        return np.asarray(json.loads(data)["data"][0]["embedding"], dtype=np.float32)

    query = embed

    def close(self) -> None:
        self.conn.close()


class TritonGrpc:
    """Triton's KServe v2 gRPC API (tritonclient), model "minilm": text in, vector out."""

    def __init__(self, target: str) -> None:
        import tritonclient.grpc as triton

        self.triton = triton
        self.client = triton.InferenceServerClient(url=target, channel_args=GRPC_OPTIONS)
        self.outputs = [triton.InferRequestedOutput("embedding")]

    def embed(self, text: str) -> np.ndarray:
        given = self.triton.InferInput("text", [1, 1], "BYTES")
        given.set_data_from_numpy(np.array([[text.encode("utf-8")]], dtype=object))
        result = self.client.infer(
            "minilm", [given], outputs=self.outputs, client_timeout=CALL_TIMEOUT_S
        )
        return np.asarray(result.as_numpy("embedding")[0])

    query = embed

    def close(self) -> None:
        self.client.close()


class Bertdot:
    """bertdot's unary Search (k=10, no passage text); vectors through Encode."""

    def __init__(self, target: str) -> None:
        import grpc

        from bertdot.v1 import bertdot_pb2, bertdot_pb2_grpc

        self.pb = bertdot_pb2
        self.channel = grpc.insecure_channel(target, options=GRPC_OPTIONS)
        self.stub = bertdot_pb2_grpc.RetrievalStub(self.channel)

    def query(self, text: str) -> object:
        return self.stub.Search(self.pb.SearchRequest(query=text, k=K), timeout=CALL_TIMEOUT_S)

    def embed(self, text: str) -> np.ndarray:
        answer = self.stub.Encode(self.pb.EncodeRequest(texts=[text]), timeout=CALL_TIMEOUT_S)
        return np.asarray(answer.embeddings[0].values, dtype=np.float32)

    def close(self) -> None:
        self.channel.close()


class BertdotStream(Bertdot):
    """One bidirectional SearchStream per client, one query in flight on it at a time."""

    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.responses: Iterator[Any] = self.stub.SearchStream(iter(self.requests.get, None))

    def query(self, text: str) -> object:
        self.requests.put(self.pb.SearchRequest(query=text, k=K))
        answer = next(self.responses)
        if answer.HasField("error"):
            raise RuntimeError(f"stream error {answer.error.code}: {answer.error.message}")
        return answer

    def close(self) -> None:
        self.requests.put(None)  # ends the request side; the server then ends the stream
        super().close()


CLIENTS: dict[str, Callable[[str], Client]] = {
    "infinity": InfinityHttp,
    "triton": TritonGrpc,
    "bertdot": Bertdot,
    "bertdot-stream": BertdotStream,
}


def latency_summary(seconds: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000.0 for s in seconds)
    deciles = statistics.quantiles(ms, n=100) if len(ms) > 1 else [ms[0]] * 99
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 3),
        "p10_ms": round(deciles[9], 3),
        "p90_ms": round(deciles[89], 3),
        "p99_ms": round(deciles[98], 3),
    }


def c1(client: Client, queries: list[str], n: int, server_pid: int | None) -> dict[str, Any]:
    for text in queries[:10]:  # warm-up: connection, server-side caches
        client.query(text)
    meter = Meter(server_pid)
    latencies = []
    meter.start()
    for i in range(n):
        started = time.perf_counter()
        client.query(queries[i % len(queries)])
        latencies.append(time.perf_counter() - started)
    return {"c1": latency_summary(latencies), "machine": meter.stop()}


def vectors(client: Client, queries: list[str], out: Path) -> dict[str, Any]:
    rows = np.asarray([client.embed(text) for text in queries], dtype=np.float32)
    np.save(out, rows)
    return {"vectors": len(rows), "dim": int(rows.shape[1])}


def _client_process(
    contender: str,
    target: str,
    queries: list[str],
    ids: list[int],
    total: int,
    duration: float,
    barrier: Any,
    results: Any,
) -> None:
    """The clients `ids`: connected and warmed before the barrier, timed after it."""
    clients = {i: CLIENTS[contender](target) for i in ids}
    for client in clients.values():
        client.query(queries[0])
    done: dict[int, list[float]] = {i: [] for i in ids}
    failed: dict[int, int] = dict.fromkeys(ids, 0)  # per client: each thread writes its own
    errors: list[str] = []  # the first few
    barrier.wait(timeout=120)
    # Every process leaves the barrier within a fraction of a millisecond; the short delay
    # lets all threads reach their loop before the clock starts.
    start_at = time.perf_counter() + 0.05
    stop_at = start_at + duration

    def loop(i: int) -> None:
        k, client, own = i, clients[i], done[i]
        time.sleep(max(0.0, start_at - time.perf_counter()))
        while (sent := time.perf_counter()) < stop_at:
            try:
                client.query(queries[k % len(queries)])
                answered = time.perf_counter()
                if answered <= stop_at:  # throughput counts the answers inside the window
                    own.append(answered - sent)
            except Exception as exc:  # counted and reported, the client goes on
                failed[i] += 1
                if len(errors) < 3:
                    errors.append(f"{type(exc).__name__}: {exc}"[:300])
                time.sleep(0.01)  # no hot loop against a server that has gone
            k += total

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=duration + CALL_TIMEOUT_S + 10)
    for client in clients.values():
        client.close()
    results.put(([x for i in ids for x in done[i]], sum(failed.values()), errors))


def concurrent(
    contender: str,
    target: str,
    queries: list[str],
    clients: int,
    procs: int,
    duration: float,
    server_pid: int | None,
) -> dict[str, Any]:
    """`clients` closed-loop clients in `procs` forked processes, measured over the same
    `duration` seconds. This process makes no connection of its own: grpc must not have one
    open when it forks."""
    procs = max(1, min(procs, clients))
    context = mp.get_context("fork")
    barrier = context.Barrier(procs + 1)
    results = context.Queue()
    workers = [
        context.Process(
            target=_client_process,
            args=(
                contender,
                target,
                queries,
                list(range(p, clients, procs)),
                clients,
                duration,
                barrier,
                results,
            ),
            daemon=True,
        )
        for p in range(procs)
    ]
    for worker in workers:
        worker.start()
    barrier.wait(timeout=120)
    start_at = time.perf_counter() + 0.05
    window = Window(start_at, start_at + duration, server_pid, os.getpid())
    gathered = [results.get(timeout=duration + CALL_TIMEOUT_S + 60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
    latencies = [x for got in gathered for x in got[0]]
    errors = sum(got[1] for got in gathered)
    return {
        "clients": clients,
        "procs": procs,
        "seconds": duration,
        "completed": len(latencies),
        "errors": errors,
        "error_examples": [e for got in gathered for e in got[2]][:3],
        "qps": round(len(latencies) / duration, 1),
        "latency": latency_summary(latencies) if latencies else None,
        "machine": window.join(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contender", choices=sorted(CLIENTS), required=True)
    parser.add_argument("--target", required=True, help="host:port (gRPC) or http://host:port")
    parser.add_argument("--queries", type=Path, required=True, help="one query a line")
    parser.add_argument("--mode", choices=("c1", "concurrent", "vectors"), required=True)
    parser.add_argument("--n", type=int, default=100, help="c1: timed requests")
    parser.add_argument("--duration", type=float, default=5.0, help="concurrent: seconds")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--out", type=Path, help="vectors: the .npy file")
    parser.add_argument("--server-pid", type=int, help="the server's pid, for the CPU record")
    args = parser.parse_args()
    queries = [line for line in args.queries.read_text(encoding="utf-8").splitlines() if line]
    if args.mode == "concurrent":
        result = concurrent(
            args.contender,
            args.target,
            queries,
            args.clients,
            args.procs,
            args.duration,
            args.server_pid,
        )
    else:
        client = CLIENTS[args.contender](args.target)
        try:
            if args.mode == "c1":
                result = c1(client, queries, args.n, args.server_pid)
            else:
                result = vectors(client, queries, args.out)
        finally:
            client.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
