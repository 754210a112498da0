"""The serving core's two worker threads: the encoder thread and the index thread.

Model work runs in the encoder thread (one ONNX Runtime call at a time: its own threads use
the cores). The index has one worker thread too, which another thread may stand in for
while it is idle.

All index work (searches, writes, snapshots, a replica's catch-up) runs as jobs on this
thread, one at a time, so a search never sees half of a write: a write commits to the store
and then updates the graph, and a search reads the graph and then the store, and neither may
run between the other's two steps. The encoder thread, holding a lone query's vector, may run
that query's search itself instead of handing it over (`run_if_idle`): it takes the same lock
every job holds, so it too runs between jobs, never beside one, and it never waits for it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


class IndexThread(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="search")
        self._turn = threading.Lock()  # held by whichever thread is doing index work

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(self._in_turn, fn, *args, **kwargs)

    def run_if_idle(self, fn: Callable[..., T], *args: Any) -> T | None:
        """`fn(*args)` in the calling thread if no index work is running, else None at once."""
        if not self._turn.acquire(blocking=False):
            return None
        try:
            return fn(*args)
        finally:
            self._turn.release()

    def _in_turn(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._turn:
            return fn(*args, **kwargs)


@dataclass
class Workers:
    """The two single-thread executors the core runs its work on."""

    encoder: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="encoder")
    )
    search: IndexThread = field(default_factory=IndexThread)

    def shutdown(self) -> None:
        self.encoder.shutdown(wait=True)
        self.search.shutdown(wait=True)
