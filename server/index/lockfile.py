"""One writer per index directory: an exclusive `flock` on INDEX_DIR/writer.lock.

Two processes applying writes to the same store and saving graphs over each other would
each keep a graph that misses the other's writes, and the last snapshot would silently drop
them. The kernel releases an flock when its process dies (kill -9 included), so a crash
never leaves a stale lock behind; the pid written into the file only makes the error
message useful.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from bertdot.server.index.manifest import IndexLoadError

LOCK_NAME = "writer.lock"


class IndexLockedError(IndexLoadError):
    """Another process holds the index open for writing."""


class WriterLock:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @classmethod
    def acquire(cls, root: Path) -> WriterLock:
        path = root / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise IndexLockedError(
                f"index {root} is already open for writing by another process (pid {holder}); "
                "stop that process, or serve this index with --read-only"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is None:
            return
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None
