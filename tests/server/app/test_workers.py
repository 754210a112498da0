"""`bertdot serve --workers N`: processes sharing one port and one index. Writes reaching a
replica worker are forwarded to the writer worker and readable at once on the connection
that made them; a killed worker is restarted; no acknowledged write is lost."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import pytest

from bertdot.client import Client
from bertdot.server.index.index import Index
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.reliability.helpers import ServeProcess, build_tiny_index, everything
from tests.support.fakes import make_passages

pytestmark = pytest.mark.slow


def connections(target: str, n: int) -> list[pb_grpc.RetrievalStub]:
    """`n` stubs on `n` distinct TCP connections (channels otherwise share a global pool)."""
    options = [("grpc.use_local_subchannel_pool", 1)]
    return [pb_grpc.RetrievalStub(grpc.insecure_channel(target, options)) for _ in range(n)]


def worker_pids(lines: list[str]) -> dict[int, int]:
    """Worker number → pid, from what the supervisor printed (its latest word on each)."""
    pids: dict[int, int] = {}
    for line in lines:
        if line.startswith("worker pids:"):
            pids.update({int(n): int(p) for n, p in re.findall(r"(\d+)=(\d+)", line)})
        elif found := re.match(r"worker (\d+) restarted: pid (\d+)", line):
            pids[int(found.group(1))] = int(found.group(2))
    return pids


def served(metrics_port: int, method: str) -> float:
    """How many calls of `method` a worker answered OK, from its Prometheus endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    pattern = rb'bertdot_requests_total\{code="OK",method="%s"\} (\S+)' % method.encode()
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def upsert(stub: pb_grpc.RetrievalStub, pid: str) -> int:
    passage = pb.Passage(id=pid, text=f"a passage written through {pid}")
    return stub.Upsert(pb.UpsertRequest(passages=[passage]), timeout=30).sequence


def wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    give_up = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < give_up, "timed out"
        time.sleep(0.1)


def test_workers_share_the_port_forward_writes_restart_and_lose_nothing(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    index = build_tiny_index(tiny_artifact, tmp_path, make_passages(30, seed=3))
    args = ["--model", str(tiny_artifact), "--device", "cpu", "--index", str(index)]
    args += ["--workers", "2", "--metrics-port", "0", "--follow-interval", "0.1"]
    acknowledged: list[str] = []
    with ServeProcess(*args, timeout=120) as server:
        wait_for(lambda: any("metrics per worker" in line for line in server.stdout))
        line = next(line for line in server.stdout if "metrics per worker" in line)
        metrics_ports = [int(p) for p in re.findall(r"\d+", line.split("ports")[1])]
        assert len(metrics_ports) == 2 and len(worker_pids(server.stdout)) == 2

        stubs = connections(server.target, 16)  # all on one worker: a 2-in-65,536 chance
        for n, stub in enumerate(stubs):
            upsert(stub, f"first{n}")
            acknowledged.append(f"first{n}")
            # Read-your-writes on the connection that wrote, whichever worker it reached.
            assert f"first{n}" in everything(stub)
        # The kernel spread the 16 connections over both workers, and both answered writes:
        # the replica by forwarding them to the writer.
        assert all(served(port, "Upsert") > 0 for port in metrics_ports)
        # So does the client's own round-robin over several connections.
        with Client(server.target, connections=16) as client:
            for n in range(48):
                assert client.search(f"passage written through first{n % 16}", k=3).hits
        assert all(served(port, "Search") > 0 for port in metrics_ports)
        # Every worker follows the others' writes within its poll interval.
        wait_for(lambda: all(set(acknowledged) <= set(everything(s)) for s in stubs))
        info = stubs[0].Info(pb.InfoRequest())
        assert info.index.size == 30 + len(stubs) and not info.index.read_only

        # Kill the writer worker: writes fail UNAVAILABLE (nothing acknowledged) until the
        # supervisor has restarted it; then they go through again.
        writer = worker_pids(server.stdout)[0]
        os.kill(writer, signal.SIGKILL)
        wait_for(lambda: worker_pids(server.stdout)[0] != writer)
        fresh = connections(server.target, 6)

        def write_everywhere() -> bool:
            for n, stub in enumerate(fresh):
                try:
                    upsert(stub, f"after{n}")
                except grpc.RpcError as err:
                    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
                    return False
                acknowledged.append(f"after{n}")
            return True

        # The replicas retry the writer's socket every second at most: writes resume soon
        # after the restarted writer serves.
        wait_for(write_everywhere, timeout=20)
        for stub in fresh:
            stub.Delete(pb.DeleteRequest(ids=["p0"]), timeout=30)
        assert server.stop() == 0

    reopened = Index.open(index, read_only=True)
    try:
        stored = reopened.get_passages([*acknowledged, "p0"])
        assert sorted(stored) == sorted(set(acknowledged))  # every acknowledged write, p0 gone
        assert reopened.count == 30 + len(set(acknowledged)) - 1
    finally:
        reopened.close()


def test_a_worker_that_cannot_start_stops_the_server_with_the_reason(tmp_path: Path) -> None:
    serve = [sys.executable, "-m", "bertdot.cli.main", "serve", "--port", "0"]
    completed = subprocess.run(
        [*serve, "--model", str(tmp_path), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 2
    assert "worker 0" in completed.stderr and "manifest.json not found" in completed.stderr


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "State:\tZ" not in status


def test_workers_stop_when_the_supervisor_is_killed(tiny_artifact: Path) -> None:
    args = ["--model", str(tiny_artifact), "--device", "cpu", "--workers", "2"]
    with ServeProcess(*args, timeout=120) as server:
        wait_for(lambda: len(worker_pids(server.stdout)) == 2)
        workers = list(worker_pids(server.stdout).values())
        assert all(alive(pid) for pid in workers)
        server.kill()  # SIGKILL: the supervisor cannot pass anything on
        wait_for(lambda: not any(alive(pid) for pid in workers), timeout=30)
