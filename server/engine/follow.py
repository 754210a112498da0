"""A read-only replica keeps its graph in step with the process that writes the index.

The passage store is SQLite in WAL mode, which other processes read while one writes; every
write carries a sequence number. A replica polls the store's latest sequence and applies
the writes after its own (`Index.follow`) on its search thread, the thread that owns graph
changes. Polling costs one indexed read per interval when nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from typing import TYPE_CHECKING

from bertdot.server.engine.offload import run_on

if TYPE_CHECKING:
    from bertdot.server.index.index import Index

log = logging.getLogger(__name__)
_REACH_LIMIT_S = 2.0


class Follower:
    def __init__(self, index: Index, search_thread: Executor) -> None:
        self.index = index
        self.search_thread = search_thread

    async def catch_up(self) -> int:
        """Apply what the store has beyond this graph now; returns the sequence it holds."""
        return int(await run_on(self.search_thread, self.index.follow))

    async def reach(self, sequence: int) -> bool:
        """Catch up at least to `sequence`, a write the writer acknowledged (so committed and
        visible: one pass normally suffices). False if it is still missing after a while."""
        give_up = time.monotonic() + _REACH_LIMIT_S
        while await self.catch_up() < sequence:
            if time.monotonic() > give_up:
                log.warning("replica did not see write %d within %.0f s", sequence, _REACH_LIMIT_S)
                return False
            await asyncio.sleep(0.005)
        return True

    async def every(self, interval_s: float) -> None:
        """Poll every `interval_s` seconds until cancelled; a failed pass is retried."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.catch_up()
            except Exception:
                log.exception("following the index's writes failed; retrying")
