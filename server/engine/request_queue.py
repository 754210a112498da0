"""The plumbing both micro-batchers share (`QueryBatcher`, `SearchBatcher`): a queue of
waiting requests, each answered through its own future, one loop task that a new request
wakes, and a stop that refuses whatever still waits, so nobody waits on a future that no
one will complete."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterable
from typing import Any, Generic, Protocol, TypeVar

from bertdot.server.errors import Overloaded


class Waiting(Protocol):
    future: asyncio.Future[Any]


W = TypeVar("W", bound=Waiting)


class RequestQueue(Generic[W]):
    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: deque[W] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=self._name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._fail(self._queue, Overloaded("server is shutting down"))
        self._queue.clear()

    def _push(self, waiting: W) -> None:
        self._queue.append(waiting)
        self._wakeup.set()

    async def _until_queued(self) -> None:
        """Return at once if a request waits, else when the next one arrives."""
        while not self._queue:
            self._wakeup.clear()
            await self._wakeup.wait()

    @staticmethod
    def _fail(requests: Iterable[W], exc: BaseException) -> None:
        for waiting in requests:
            if not waiting.future.done():
                waiting.future.set_exception(exc)
