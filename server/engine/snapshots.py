"""Online graph snapshots: bound the replay a restart needs by saving the graph now and then.

Saves run in the search thread, the one that applies writes to the graph, so a snapshot
holds exactly the writes up to its sequence and never races an insertion; searches pause
for the save (a full write of the graph file, fsynced, renamed). A failed save (disk full)
loses nothing: the store still has every write and the next start replays them.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bertdot.server.index.index import Index

log = logging.getLogger(__name__)


class Snapshots:
    def __init__(self, index: Index, search_thread: Executor) -> None:
        self.index = index
        self.search_thread = search_thread
        self.saved = 0  # snapshots written by this process

    def save_if_changed(self) -> bool:
        """Save the graph if writes arrived since the last save. Call on the search thread."""
        if self.index.pending_writes <= 0:
            return False
        self.index.save_graph()
        self.saved += 1
        return True

    async def save(self) -> bool:
        try:
            loop = asyncio.get_running_loop()
            return bool(await loop.run_in_executor(self.search_thread, self.save_if_changed))
        except Exception:
            log.exception("graph snapshot failed; the next start replays the store's writes")
            return False

    async def every(self, interval_s: float) -> None:
        """Check every `interval_s` seconds; runs until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            await self.save()
