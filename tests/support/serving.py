"""Run a real BertdotServer on port 0 in a background thread with its own event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from bertdot.server.app.config import ServerConfig
from bertdot.server.app.server import BertdotServer

T = TypeVar("T")


class ServerThread:
    def __init__(self, config: ServerConfig) -> None:
        self.server = BertdotServer(config)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run `coro` on the server's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def close(self) -> None:
        self.call(self.server.stop(grace=1))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextmanager
def serving(config: ServerConfig, wait_ready: bool = True) -> Iterator[ServerThread]:
    thread = ServerThread(config)
    try:
        thread.call(thread.server.start(wait_ready=wait_ready))
        yield thread
    finally:
        thread.close()
