"""Running blocking work on one of the serving core's worker threads from the event loop,
and the microsecond timings every answer carries."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Any


async def run_on(executor: Executor, fn: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)


def microseconds(seconds: float) -> int:
    return int(seconds * 1e6)
