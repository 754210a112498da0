"""Crash: `bertdot serve` takes a stream of upserts and deletes and is killed with SIGKILL at
random points; after each restart every acknowledged write is there (searchable, latest
text, vector of that text) and the write in flight at the kill is all there or not at all.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.reliability.helpers import (
    ServeProcess,
    build_tiny_index,
    encode,
    everything,
    figures,
)
from tests.support.fakes import make_passages

KILLS = 5
WRITERS = 2
POOL = 60  # ids per writer: upserts keep replacing them, deletes remove them
WORDS = (
    "river",
    "stone",
    "cloud",
    "ember",
    "frost",
    "meadow",
    "copper",
    "lantern",
    "harbor",
    "thistle",
)


@dataclass
class Ledger:
    """What the server acknowledged, and the one write per writer whose answer never came."""

    texts: dict[str, str | None]  # id → latest acknowledged text; None: deleted
    in_flight: dict[int, dict[str, str | None]] = field(default_factory=dict)
    acknowledged: int = 0
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def writer(target: str, ledger: Ledger, number: int, seed: int) -> None:
    rng = random.Random(seed)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        while True:
            ids = rng.sample([f"w{number}-{i}" for i in range(POOL)], rng.randint(1, 5))
            write: dict[str, str | None]
            method: object
            if rng.random() < 0.15:
                write = dict.fromkeys(ids)
                method, request = stub.Delete, pb.DeleteRequest(ids=ids)
            else:
                stamp = rng.getrandbits(32)
                write = {i: f"{i} v{stamp} " + " ".join(rng.choices(WORDS, k=6)) for i in ids}
                passages = [pb.Passage(id=i, text=t or "") for i, t in write.items()]
                method, request = stub.Upsert, pb.UpsertRequest(passages=passages)
            with ledger.lock:
                ledger.in_flight[number] = write
                ledger.requests += 1
            try:
                method(request, timeout=10)  # type: ignore[operator]
            except grpc.RpcError:
                return  # the server is gone: this write stays in flight (unacknowledged)
            with ledger.lock:
                ledger.texts.update(write)
                ledger.acknowledged += len(write)
                del ledger.in_flight[number]


def check(target: str, ledger: Ledger) -> tuple[int, int]:
    """Compare the restarted server with the ledger; returns (writes lost, in-flight writes
    found applied). Settles the in-flight writes into the ledger."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.RetrievalStub(channel)
        found = everything(stub)
        assert stub.Info(pb.InfoRequest()).index.size == len(found)  # store and graph agree
        texts = [h.text for h in found.values()]
        query = encode(stub, ["the"])[0]
        expected_scores = encode(stub, texts) @ query
    # Every passage the graph finds carries the vector of its stored text (no half-write).
    np.testing.assert_allclose(
        [h.score for h in found.values()], expected_scores, rtol=1e-4, atol=1e-3
    )
    state = {pid: h.text for pid, h in found.items()}
    applied = 0
    for write in ledger.in_flight.values():
        # Only ids this write would change tell whether it was applied (deleting an absent
        # id changes nothing).
        changed = [pid for pid, text in write.items() if ledger.texts.get(pid) != text]
        done = [state.get(pid) == write[pid] for pid in changed]
        assert all(done) or not any(done), f"in-flight write half applied: {write}"
        if changed and all(done):
            applied += 1
            ledger.texts.update(write)
    ledger.in_flight.clear()
    lost = sum(state.get(pid) != text for pid, text in ledger.texts.items())
    unexpected = set(state) - {pid for pid, text in ledger.texts.items() if text is not None}
    assert not unexpected, f"passages nobody wrote: {sorted(unexpected)[:5]}"
    return lost, applied


@pytest.mark.slow
@pytest.mark.parametrize("vectors", ["f32", "f16", "i8"])  # hnswlib, and usearch's compact
def test_acknowledged_writes_survive_sigkill(
    tiny_artifact: Path, tmp_path: Path, vectors: str
) -> None:
    started = time.perf_counter()
    base = make_passages(40, seed=21, titled=False)
    index = build_tiny_index(tiny_artifact, tmp_path, base, vectors)
    ledger = Ledger(texts={p.id: p.text for p in base})
    rng = random.Random(20240611)
    serve = ["--model", str(tiny_artifact), "--index", str(index), "--device", "cpu"]
    lost = applied = 0
    for cycle in range(KILLS):
        # Every other life also snapshots the graph often, so kills land around saves too.
        extra = ["--snapshot-interval", "0.1"] if cycle % 2 else []
        with ServeProcess(*serve, *extra) as server:
            lost_now, applied_now = check(server.target, ledger)
            lost, applied = lost + lost_now, applied + applied_now
            threads = [
                threading.Thread(
                    target=writer, args=(server.target, ledger, n, rng.getrandbits(32))
                )
                for n in range(WRITERS)
            ]
            for thread in threads:
                thread.start()
            time.sleep(rng.uniform(0.3, 1.5))
            server.kill()
            for thread in threads:
                thread.join(30)
    with ServeProcess(*serve) as server:
        lost_now, applied_now = check(server.target, ledger)
        lost, applied = lost + lost_now, applied + applied_now
        assert server.stop() == 0
    figures(
        f"crash ({vectors} vectors)",
        kills=KILLS,
        write_requests=ledger.requests,
        passages_acknowledged=ledger.acknowledged,
        in_flight_found_applied=applied,
        writes_lost=lost,
        seconds=round(time.perf_counter() - started, 1),
    )
    assert lost == 0
    assert ledger.acknowledged > 50 * KILLS  # the kills really interrupted a stream of writes
