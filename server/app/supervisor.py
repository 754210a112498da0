"""`bertdot serve --workers N`: several serving processes on one port and one index.

One serving process spends its time in Python (gRPC, batching, answers) on two or three
cores; on a GPU host the encoder then waits for it. N processes listen on the same port with
SO_REUSEPORT and the kernel spreads incoming connections across them (Linux), so a client
needs several connections (or several clients) to reach several workers. Each worker loads
its own encoder session and its own copy of the graph: N times the memory of one.

Writes: worker 0 takes the index's writer lock and also listens on a private unix socket;
the other workers open the index read-only, follow the store's writes, and forward Upsert
and Delete to worker 0 (see write_forwarding.py). Worker 0 starts first, so it has loaded
(or repaired) the graph before the replicas read it.

The supervisor restarts a worker that dies while serving, forwards SIGTERM and SIGINT to
the workers (each drains its in-flight requests), and stops everything when a worker fails
before it ever served (a bad flag or file would only fail again).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bertdot.server.app.config import ServerConfig
from bertdot.server.app.serve import Ready, announce, serve_forever
from bertdot.server.cores import usable_cores
from bertdot.server.index.index import IndexLoadError

log = logging.getLogger(__name__)
_START_TIMEOUT_S = 600.0  # loading a model on a cold disk, building a CUDA session
_RESTART_DELAY_S = 1.0


def worker_configs(config: ServerConfig, port: int, private_dir: Path) -> list[ServerConfig]:
    """Each worker's configuration: the shared port, its own metrics port, its role, and
    (unless --threads says otherwise) its share of the cores for ONNX Runtime: N sessions
    each spinning up a thread per core would oversubscribe the CPU N times."""
    writable = config.index is not None and not config.read_only
    socket_address = f"unix:{private_dir / 'writer.sock'}" if writable else None
    threads = config.intra_op_threads or max(1, usable_cores() // config.workers)
    configs = []
    for n in range(config.workers):
        metrics = config.metrics_port
        if metrics:  # 0 stays 0: each worker picks a free port
            metrics += n
        configs.append(
            replace(
                config,
                port=port,
                workers=1,
                reuse_port=True,
                metrics_port=metrics,
                intra_op_threads=threads,
                read_only=config.read_only or n > 0,
                private_address=socket_address if n == 0 else None,
                writer_address=socket_address if n > 0 else None,
                rebuild_graph=config.rebuild_graph and n == 0,
            )
        )
    return configs


@contextlib.contextmanager
def reserved_port(host: str, port: int) -> Iterator[int]:
    """Bind (without listening) a SO_REUSEPORT socket: resolves port 0 to a free port and
    keeps it from other programs until the workers listen on it with SO_REUSEPORT too."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@dataclass
class _Worker:
    number: int
    config: ServerConfig
    process: BaseProcess
    reports: Connection
    ready: Ready | None = None


def _stop_with_parent(parent: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies, even by SIGKILL: an orphaned worker
    would go on holding the port and the index. Elsewhere, a no-op."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(config: ServerConfig, number: int, reports: Connection, parent: int) -> None:
    """A worker process: serve until SIGTERM; report readiness (or the reason it could not
    start) to the supervisor."""
    _stop_with_parent(parent)
    logging.basicConfig(
        level=logging.WARNING, format=f"%(asctime)s worker {number} %(levelname)s %(message)s"
    )
    try:
        code = asyncio.run(serve_forever(config, on_ready=reports.send))
    except (OSError, ValueError, IndexLoadError) as exc:
        reports.send(f"worker {number}: {exc}")
        code = 2
    sys.exit(code)


class Supervisor:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.context = multiprocessing.get_context("spawn")  # no forked CUDA or gRPC state
        self.workers: list[_Worker] = []
        self.stopping = threading.Event()

    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        with (
            tempfile.TemporaryDirectory(prefix="bertdot-") as private,
            reserved_port(self.config.host, self.config.port) as port,
        ):
            configs = worker_configs(self.config, port, Path(private))
            try:
                failure = self._start_all(configs)
                if failure is None:
                    ready = self.workers[0].ready
                    assert ready is not None
                    announce(self.config, ready, len(self.workers))
                    self._announce_workers()
                    self._watch()
                    return 0
                print(f"bertdot serve: error: {failure}", file=sys.stderr)
                return 2
            finally:
                self._stop_all()

    def _start_all(self, configs: list[ServerConfig]) -> str | None:
        """Worker 0 first (it may repair the graph the others read), then the rest at once.
        Returns why starting failed, or None."""
        self.workers = [self._spawn(0, configs[0])]
        if (failure := self._await_ready(self.workers)) is not None:
            return failure
        self.workers += [self._spawn(n, c) for n, c in enumerate(configs) if n > 0]
        return self._await_ready(self.workers[1:])

    def _spawn(self, number: int, config: ServerConfig) -> _Worker:
        mine, theirs = self.context.Pipe(duplex=False)
        process = self.context.Process(
            target=_worker_main,
            args=(config, number, theirs, os.getpid()),
            name=f"bertdot-worker-{number}",
        )
        process.start()
        theirs.close()
        return _Worker(number, config, process, mine)

    def _await_ready(self, workers: list[_Worker]) -> str | None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        waiting = {w.reports: w for w in workers}
        while waiting:
            if self.stopping.is_set():
                return "interrupted while starting"
            if time.monotonic() > deadline:
                return f"workers not ready after {_START_TIMEOUT_S:.0f} s"
            for conn in wait(list(waiting), timeout=0.2):
                worker = waiting.pop(conn)  # type: ignore[call-overload]
                message = _receive(worker.reports)
                if not isinstance(message, Ready):
                    return str(message or f"worker {worker.number} exited while starting")
                worker.ready = message
        return None

    def _announce_workers(self) -> None:
        pids = " ".join(f"{w.number}={w.process.pid}" for w in self.workers)
        print(f"worker pids: {pids} (worker 0 applies the writes)", flush=True)
        ports = [w.ready.metrics_port for w in self.workers if w.ready is not None]
        if self.config.metrics_port is not None:
            listed = ", ".join(str(p) for p in ports)
            print(f"metrics per worker on ports {listed} (/metrics)", flush=True)

    def _watch(self) -> None:
        """Until a signal: restart any worker that exits."""
        while not self.stopping.is_set():
            sentinels = {w.process.sentinel: w for w in self.workers}
            for sentinel in wait(list(sentinels), timeout=0.2):
                if self.stopping.is_set():
                    return
                worker = sentinels[sentinel]  # type: ignore[index]
                code = worker.process.exitcode
                print(f"worker {worker.number} exited ({code}); restarting it", file=sys.stderr)
                time.sleep(_RESTART_DELAY_S)
                self._restart(worker)

    def _restart(self, worker: _Worker) -> None:
        fresh = self._spawn(worker.number, worker.config)
        self.workers[self.workers.index(worker)] = fresh
        if (failure := self._await_ready([fresh])) is not None:
            print(f"worker {worker.number} failed to restart: {failure}", file=sys.stderr)
        else:
            print(f"worker {worker.number} restarted: pid {fresh.process.pid}", flush=True)

    def _stop_all(self) -> None:
        """SIGTERM every worker (each drains within the grace period), then wait for them."""
        for worker in self.workers:
            if worker.process.is_alive() and worker.process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.process.pid, signal.SIGTERM)
        give_up = time.monotonic() + self.config.grace_s + 30.0  # + the final graph save
        for worker in self.workers:
            worker.process.join(max(give_up - time.monotonic(), 0.1))
            if worker.process.is_alive():
                log.warning("worker %d did not stop; killing it", worker.number)
                worker.process.kill()
                worker.process.join()


def _receive(conn: Connection) -> Any:
    try:
        return conn.recv()
    except EOFError:  # the process died without a word
        return None


def serve_workers(config: ServerConfig) -> int:
    return Supervisor(config).run()
