"""`bertdot serve` as a process: starts, answers, drains in-flight work on SIGTERM, exits 0."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest

from bertdot.v1 import bertdot_pb2 as pb
from bertdot.v1 import bertdot_pb2_grpc as pb_grpc


def start_serve(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bertdot.cli.main", "serve", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    for line in process.stdout:
        found = re.search(r"serving on (\S+:\d+)", line)
        if found:
            return process, found.group(1)
    raise AssertionError(f"server did not start: {process.stderr.read() if process.stderr else ''}")


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_and_exits_zero(tiny_artifact: Path) -> None:
    # Configuration from the environment: BERTDOT_MODEL and BERTDOT_DEVICE instead of flags.
    env = {"BERTDOT_MODEL": str(tiny_artifact), "BERTDOT_DEVICE": "cpu", "BERTDOT_GRACE": "20"}
    process, target = start_serve(env=env)
    try:
        with grpc.insecure_channel(target) as channel:
            stub = pb_grpc.RetrievalStub(channel)
            assert stub.Info(pb.InfoRequest()).model.dim == 32
            long_texts = ["dense retrieval " * 250] * 256  # slow enough to be in flight
            result: dict[str, object] = {}

            def call() -> None:
                try:
                    result["dim"] = stub.Encode(pb.EncodeRequest(texts=long_texts), timeout=60).dim
                except grpc.RpcError as err:
                    result["error"] = err.code()

            worker = threading.Thread(target=call)
            worker.start()
            threading.Event().wait(0.3)
            process.send_signal(signal.SIGTERM)
            worker.join(60)
            assert result == {"dim": 32}
        assert process.wait(60) == 0
    finally:
        process.kill()


def test_serve_refuses_a_missing_artifact(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bertdot.cli.main", "serve", "--model", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 2
    assert "manifest.json not found" in completed.stderr
