"""Where the CPU went during a timed block: the contender's server, the load client, and
everything else on the machine (Linux /proc; stdlib only, because it runs inside the peers'
own environments as part of `load.py` and `worker_fastembed.py`).

The block is measured by the process that times it, over exactly the timed seconds: the
driver's view from outside would also count the load client's start-up and connection set-up.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def system_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all but idle and iowait)."""
    fields = Path("/proc/stat").read_text(encoding="utf-8").split("\n", 1)[0].split()
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, user + system ticks) of every live process."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text(encoding="utf-8")
        except OSError:
            continue  # exited meanwhile
        # The fields after the command name, which may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def tree_cpu_s(roots: list[int]) -> float:
    """CPU seconds of the live processes under `roots`, roots included: a PyTriton server is
    our Python process, tritonserver below it and the Python-backend stub below that."""
    table = _processes()
    keep = {r for r in roots if r in table}
    grown = True
    while grown:
        below = {pid for pid, (parent, _) in table.items() if parent in keep} - keep
        keep |= below
        grown = bool(below)
    return sum(table[pid][1] for pid in keep) / CLOCK_TICKS


class Meter:
    """Cores used between `start()` and `stop()`: machine-wide, by the server's process tree,
    by the client's (this process and its children), and by the rest ("others")."""

    def __init__(self, server_pid: int | None, client_pid: int | None = None) -> None:
        self.server = [server_pid] if server_pid else []
        self.client = [client_pid or os.getpid()]
        if server_pid == self.client[0]:  # in process: server and client are one
            self.server = []
        self._start: tuple[float, float, float, float] | None = None

    def _sample(self) -> tuple[float, float, float, float]:
        server = tree_cpu_s(self.server) if self.server else 0.0
        return time.perf_counter(), system_busy_s(), server, tree_cpu_s(self.client)

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> dict[str, float]:
        assert self._start is not None
        end = self._sample()
        wall = max(end[0] - self._start[0], 1e-9)
        system, server, client = ((end[i] - self._start[i]) / wall for i in (1, 2, 3))
        return {
            "seconds": round(wall, 3),
            "system_cores": round(system, 2),
            "server_cores": round(server, 2),
            "client_cores": round(client, 2),
            "others_cores": round(max(system - server - client, 0.0), 2),
            "load1": round(os.getloadavg()[0], 2),
        }


class Window:
    """A `Meter` over [start_at, stop_at] (perf_counter times), sampled from a helper thread
    while the caller's clients run in other threads or processes."""

    def __init__(
        self, start_at: float, stop_at: float, server_pid: int | None, client_pid: int
    ) -> None:
        self._meter = Meter(server_pid, client_pid)
        self._times = (start_at, stop_at)
        self.result: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        start_at, stop_at = self._times
        time.sleep(max(0.0, start_at - time.perf_counter()))
        self._meter.start()
        time.sleep(max(0.0, stop_at - time.perf_counter()))
        self.result = self._meter.stop()

    def join(self) -> dict[str, float]:
        self._thread.join()
        return self.result
