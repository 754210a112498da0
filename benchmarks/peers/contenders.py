"""The contenders as the driver sees them: started, measured block by block, stopped.

Every serving contender (bertdot, Triton, infinity) is measured by the same load client,
`load.py`, run as a fresh process per block with an interpreter that has the contender's
client library; fastembed is measured inside its own long-lived worker process. Peer servers
run in sessions of their own, so whatever they spawn (tritonserver, the Python-backend stub)
is stopped with them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# No contender may reach the Hugging Face hub, and infinity's telemetry stays off.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "DO_NOT_TRACK": "1"}


def offline_env() -> dict[str, str]:
    return dict(os.environ, **OFFLINE)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Workload:
    """What each block asks of a contender: the same for all of them."""

    queries: Path
    c1_requests: int
    clients: int
    client_procs: int
    duration_s: float


def run_load(
    python: Path,
    client: str,
    target: str,
    workload: Workload,
    mode: str,
    server_pid: int | None,
    out: Path | None = None,
) -> dict[str, Any]:
    """One `load.py` run; its JSON answer."""
    command = [str(python), str(HERE / "load.py"), "--contender", client, "--target", target]
    command += ["--queries", str(workload.queries), "--mode", mode]
    command += ["--n", str(workload.c1_requests), "--duration", str(workload.duration_s)]
    command += ["--clients", str(workload.clients), "--procs", str(workload.client_procs)]
    if server_pid:
        command += ["--server-pid", str(server_pid)]
    if out:
        command += ["--out", str(out)]
    # Its own session, so that its forked client processes go with it when the run stops
    # early (an exception, SIGTERM): subprocess.run would kill load.py alone.
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=offline_env(),
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=workload.duration_s + 300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if process.returncode != 0:
        tail = " | ".join(stderr.strip().splitlines()[-4:])
        raise RuntimeError(f"load.py --contender {client} --mode {mode} failed: {tail}")
    return dict(json.loads(stdout.strip().splitlines()[-1]))


class PeerServer:
    """A peer's server as a subprocess in its own session, ready when `ready_url` answers 200."""

    def __init__(self, argv: list[str], ready_url: str, log: Path) -> None:
        self.argv, self.ready_url, self.log = argv, ready_url, log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout_s: float) -> float:
        """Seconds until ready."""
        started = time.perf_counter()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as handle:
            self.process = subprocess.Popen(
                self.argv,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=offline_env(),
                start_new_session=True,
            )
        while time.perf_counter() - started < timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=1) as answer:
                    if answer.status == 200:
                        return round(time.perf_counter() - started, 1)
            except OSError:
                pass  # not listening yet
            time.sleep(0.3)
        raise TimeoutError(f"not ready after {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self, grace_s: float = 40.0) -> None:
        """SIGTERM (PyTriton then stops tritonserver and cleans its workspace, which takes a
        few seconds), then SIGKILL to whatever is left in the session."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(grace_s)
        with contextlib.suppress(ProcessLookupError):  # nothing left
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()


class FastembedWorker:
    """fastembed in its own process (`worker_fastembed.py`), answering one command at a time."""

    def __init__(self, python: Path, model_dir: Path, queries: Path, log: Path) -> None:
        self.argv = [str(python), str(HERE / "worker_fastembed.py"), "--model-dir", str(model_dir)]
        self.argv += ["--queries", str(queries)]
        self.log = log
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> float:
        """Seconds the worker took to load the model and warm it up."""
        with open(self.log, "w", encoding="utf-8") as handle:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=handle,
                text=True,
                env=offline_env(),
                start_new_session=True,
            )
        return float(self._read()["load_s"])

    def _read(self) -> dict[str, Any]:
        assert self.process is not None and self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the fastembed worker exited; see {self.log}")
        answer = dict(json.loads(line))
        if "error" in answer:
            raise RuntimeError(f"fastembed worker: {answer['error']}")
        return answer

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()
        return self._read()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                assert self.process.stdin is not None
                self.process.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.process.stdin.close()
                self.process.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()
