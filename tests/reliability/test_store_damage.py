"""A damaged passage store is found, not served: refused at start, DATA_LOSS and health
NOT_SERVING when met while serving, and an online backup restores every acknowledged
passage."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bertdot.server.index.index import STORE_NAME, Index
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.reliability.helpers import ServeProcess, build_tiny_index, everything, status_of
from tests.support.fakes import make_passages

BASE = make_passages(300, seed=21)
PAGE = 4096


def damage(store: Path, seed: int = 0) -> None:
    """Overwrite one 4 KiB page in the middle of the file with random bytes."""
    size = store.stat().st_size
    offset = (size // 2) // PAGE * PAGE
    with open(store, "r+b") as handle:
        handle.seek(offset)
        handle.write(np.random.default_rng(seed).bytes(PAGE))


def bertdot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bertdot.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return int(
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            .status
        )


@pytest.mark.slow
def test_damage_is_refused_reported_and_a_backup_restores_every_acknowledged_passage(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    index = build_tiny_index(tiny_artifact, tmp_path / "build", BASE)
    serve = ["--model", str(tiny_artifact), "--device", "cpu"]
    written = {f"w{i}": f"acknowledged passage number {i} about topic {i % 7}" for i in range(40)}
    with ServeProcess(*serve, "--index", str(index)) as server:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.RetrievalStub(channel)
            for start in range(0, 40, 10):
                batch = [
                    pb.Passage(id=k, text=written[k]) for k in list(written)[start : start + 10]
                ]
                stub.Upsert(pb.UpsertRequest(passages=batch), timeout=30)
            # An online backup, taken while the server holds the writer lock and serves.
            made = bertdot("index", "backup", str(index), str(tmp_path / "backup"))
            assert made.returncode == 0, made.stderr
            assert "340 passages" in made.stdout
            assert stub.Search(pb.SearchRequest(query="still serving"), timeout=10).hits
        assert server.stop() == 0

    damage(index / STORE_NAME)
    checked = bertdot("index", "check", str(index))
    assert checked.returncode != 0 and "Traceback" not in checked.stderr
    assert "passage store passages.sqlite is damaged" in checked.stderr
    refused = bertdot("serve", *serve, "--index", str(index), "--port", "0")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "is damaged" in refused.stderr and "bertdot index backup" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1

    # Deferred: the server starts, then its background check and its reads meet the damage.
    with ServeProcess(*serve, "--index", str(index), "--defer-store-check") as server:
        deadline = time.monotonic() + 30
        while health(server.target) != health_pb2.HealthCheckResponse.NOT_SERVING:
            assert time.monotonic() < deadline, "health never turned NOT_SERVING"
            time.sleep(0.1)
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.RetrievalStub(channel)
            upsert = pb.UpsertRequest(passages=[pb.Passage(id="late", text="not written")])
            with pytest.raises(grpc.RpcError) as caught:
                stub.Upsert(upsert, timeout=10)
            assert caught.value.code() == grpc.StatusCode.DATA_LOSS
            assert "passage store is damaged" in caught.value.details()
            every_id = pb.RerankRequest(
                query="q", candidates=[pb.Candidate(passage_id=k) for k in written]
            )
            codes = {status_of(lambda: stub.Rerank(every_id, timeout=10))}
            codes |= {
                status_of(lambda q=q: stub.Search(pb.SearchRequest(query=q, k=50), timeout=10))
                for q in ("topic", "passage", "number", "acknowledged", "about")
            }
            assert codes <= {grpc.StatusCode.OK, grpc.StatusCode.DATA_LOSS}  # never INTERNAL
        assert server.stop() == 0
    assert server.stderr.count("is damaged") == 1  # one clear line, naming the file
    assert str(index / STORE_NAME) in server.stderr

    # The backup serves every passage acknowledged before it, with its text.
    with ServeProcess(*serve, "--index", str(tmp_path / "backup")) as server:
        with grpc.insecure_channel(server.target) as channel:
            found = everything(pb_grpc.RetrievalStub(channel))
        assert server.stop() == 0
    assert {k: found[k].text for k in written if k in found} == written
    assert {p.id for p in BASE} <= set(found)
    restored = Index.open(tmp_path / "backup")
    try:
        assert restored.count == 340
    finally:
        restored.close()
