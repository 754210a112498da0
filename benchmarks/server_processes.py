"""The subprocesses of benchmarks/server.py: `bertdot serve` and `bertdot bench`, and the CPU
and memory they use, read from /proc (Linux)."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import _system_busy_s


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def bertdot_command() -> list[str]:
    """The `bertdot` command of this interpreter's environment."""
    beside = Path(sys.executable).with_name("bertdot")
    return [str(beside)] if beside.is_file() else [sys.executable, "-m", "bertdot.cli.main"]


def status_kib(pid: int | str, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a running process (0 where /proc cannot say)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a `bertdot serve --workers N` supervisor and its workers)."""
    tree, i = [pid], 0
    while i < len(tree):
        try:
            tasks = Path(f"/proc/{tree[i]}/task").iterdir()
            tree += [int(c) for t in tasks for c in (t / "children").read_text().split()]
        except OSError:
            pass  # exited meanwhile
        i += 1
    return tree


def _tree_cpu_s(pid: int) -> float:
    return sum(_cpu_s(p) for p in process_tree(pid))


class CpuShares:
    """Cores' worth of CPU used while the `with` body ran: by the server, by the child processes
    that finished meanwhile (the load generator), by this process, and by everything else."""

    def __init__(self, server_pid: int | None) -> None:
        self.server_pid = server_pid
        self.cores: dict[str, float | None] = {}

    def _sample(self) -> tuple[float, float | None, float, float, float]:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        own = os.times()
        return (
            time.perf_counter(),
            _system_busy_s(),
            _tree_cpu_s(self.server_pid) if self.server_pid else 0.0,
            children.ru_utime + children.ru_stime,
            own.user + own.system,
        )

    def __enter__(self) -> CpuShares:
        self._start = self._sample()
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, server0, children0, own0 = self._start
        wall1, busy1, server1, children1, own1 = self._sample()
        wall = max(wall1 - wall0, 1e-9)
        shares = {
            "server": server1 - server0,
            "client": children1 - children0,
            "this process": own1 - own0,
        }
        self.cores = {name: round(cpu / wall, 2) for name, cpu in shares.items()}
        if busy0 is not None and busy1 is not None:
            others = max(busy1 - busy0 - sum(shares.values()), 0.0)
            self.cores["others"] = round(others / wall, 2)
        else:
            self.cores["others"] = None


class ServerProcess:
    """`bertdot serve` (or another `program` that takes --host and --port and serves gRPC
    health) as a subprocess on a free port, its output in a log file; stopped (SIGTERM, then
    SIGKILL) on leaving the `with` block, whatever happened inside it."""

    def __init__(
        self,
        arguments: Sequence[str],
        log: Path,
        program: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.target = f"127.0.0.1:{self.port}"
        self.command = list(program or [*bertdot_command(), "serve"])
        self.command += ["--host", "127.0.0.1", "--port", str(self.port), *arguments]
        self.log = log
        self.env = dict(env) if env is not None else None
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as handle:
            self.process = subprocess.Popen(
                self.command,
                stdout=handle,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until the health service says SERVING; raises if the server exits first."""
        from bertdot.client import BertdotError, Client

        assert self.process is not None
        started = time.perf_counter()
        with Client(self.target, timeout=2.0) as client:
            while time.perf_counter() - started < timeout_s:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"the server exited with {self.process.returncode}: {self.log_tail()}"
                    )
                try:
                    if client.health() == "SERVING":
                        return time.perf_counter() - started
                except BertdotError:
                    pass  # not listening yet
                time.sleep(0.5)
        raise TimeoutError(f"the server not SERVING after {timeout_s:.0f} s: {self.log_tail()}")

    def memory_bytes(self) -> dict[str, int | None]:
        """Resident memory now (VmRSS) and at its peak so far (VmHWM), summed over the
        server's processes (with several workers, the sum of their peaks)."""
        tree = process_tree(self.pid)
        totals: dict[str, int | None] = {}
        for key in ("VmRSS", "VmHWM"):
            values = [status_kib(p, key) for p in tree]
            known = [v for v in values if v is not None]
            totals[key] = sum(known) * 1024 if known else None
        return totals

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def run_bench(
    target: str,
    mode: str,
    concurrency: int,
    load: tuple[float, float, int],
    queries: Path,
    out: Path,
    connections: int = 1,
    processes: int = 1,
) -> dict[str, Any]:
    """One `bertdot bench` closed-loop run, `load` = (duration s, warm-up s, k); its JSON
    summary, or {"error": ...}."""
    duration, warmup, k = load
    command = [*bertdot_command(), "bench", "--target", target, "--mode", mode]
    command += ["--concurrency", str(concurrency), "--connections", str(connections)]
    command += ["--processes", str(processes)]
    command += ["--duration", str(duration)]
    command += ["--warmup", str(warmup), "--queries", str(queries), "--k", str(k)]
    command += ["--json", str(out), "--quiet"]
    out.unlink(missing_ok=True)
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=duration + warmup + 120,
        )
    except subprocess.TimeoutExpired as exc:
        return {"error": error_text(exc)}
    if done.returncode != 0 or not out.is_file():
        tail = " | ".join(done.stderr.strip().splitlines()[-5:])
        return {"error": f"bertdot bench exited with {done.returncode}: {tail}"}
    return dict(json.loads(out.read_text(encoding="utf-8")))
