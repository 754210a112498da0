"""Shared pieces of the write and reliability tests: a writable index built with the tiny
model, `bertdot serve` as a subprocess (killable with SIGKILL), its RSS, and the figures
each reliability test prints (visible with `pytest -s`)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import grpc
import numpy as np

from bertdot.server.encoding.encoder import Encoder
from bertdot.server.index.corpus import Passage
from bertdot.server.indexing.build import build_index
from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc
from tests.support.fakes import write_jsonl


def build_tiny_index(
    artifact: Path, root: Path, passages: Sequence[Passage], vectors: str = "f32"
) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    out = root / "index"
    build_index(
        Encoder(artifact, device="cpu"),
        write_jsonl(root / "corpus.jsonl", passages),
        out,
        progress=False,
        vectors=vectors,
        say=lambda _: None,
    )
    return out


def copy_index(source: Path, target: Path) -> Path:
    return Path(shutil.copytree(source, target))


def rss_mib(pid: int) -> float:
    """Resident set size of a process, from /proc (no psutil needed)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def figures(title: str, **values: object) -> str:
    """One line of figures, printed so that `pytest -s` shows them in the run's output."""
    line = f"[reliability] {title}: " + ", ".join(
        f"{k.replace('_', ' ')}={v}" for k, v in values.items()
    )
    print(line, flush=True)
    return line


class ServeProcess:
    """`bertdot serve` in a subprocess on a free port; `kill()` sends SIGKILL."""

    def __init__(self, *args: str, timeout: float = 60) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bertdot.cli.main", "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stdout: list[str] = []  # the lines after the "serving on" banner
        self.target = self._wait_target(timeout)
        # Drain the pipes so a chatty server never blocks on a full pipe.
        self._stderr: list[str] = []
        pipes = ((self.process.stdout, self.stdout), (self.process.stderr, self._stderr))
        for stream, sink in pipes:
            threading.Thread(target=_drain, args=(stream, sink), daemon=True).start()

    def _wait_target(self, timeout: float) -> str:
        assert self.process.stdout is not None
        timer = threading.Timer(timeout, self.process.kill)
        timer.start()
        try:
            for line in self.process.stdout:
                found = re.search(r"serving on (\S+:\d+)", line)
                if found:
                    return found.group(1)
        finally:
            timer.cancel()
        err = self.process.stderr.read() if self.process.stderr else ""
        raise AssertionError(f"server did not start: {err}")

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        """SIGTERM: drain and exit; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)

    @property
    def stderr(self) -> str:
        return "".join(self._stderr)

    def __enter__(self) -> ServeProcess:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.process.poll() is None:
            self.kill()
        if exc_type is not None:  # the server's side of a failure
            print(f"--- bertdot serve stderr ---\n{self.stderr}", file=sys.stderr)


def _drain(stream: object, sink: list[str] | None) -> None:
    for line in stream:  # type: ignore[attr-defined]
        if sink is not None:
            sink.append(line)


def everything(stub: pb_grpc.RetrievalStub, query: str = "the") -> dict[str, pb.Hit]:
    """Every passage the graph can find (k and ef at their limits: the indexes in these tests
    hold well under 1000 passages), by id."""
    response = stub.Search(pb.SearchRequest(query=query, k=1000, ef=4096, return_text=True))
    return {h.id: h for h in response.hits}


def encode(stub: pb_grpc.RetrievalStub, texts: Sequence[str]) -> np.ndarray:
    vectors = []
    for start in range(0, len(texts), 256):
        response = stub.Encode(pb.EncodeRequest(texts=list(texts[start : start + 256])))
        vectors.extend(e.values for e in response.embeddings)
    return np.array(vectors, dtype=np.float32).reshape(len(texts), -1)


def status_of(call: object) -> grpc.StatusCode:
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK
