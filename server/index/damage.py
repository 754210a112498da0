"""A damaged passage store is found and named, not served as if nothing happened.

The store (SQLite) is the index's source of truth: the graph can be rebuilt from it, but
nothing can rebuild it. Its pages are checked at open (`PRAGMA quick_check`), and any
SQLite error that means corruption (SQLITE_CORRUPT, SQLITE_NOTADB), met later while
serving, becomes `StoreDamaged` (DATA_LOSS on the wire) and is reported to whoever listens
(the server turns health NOT_SERVING and refuses writes), instead of a generic INTERNAL.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bertdot.server.errors import DataLoss

F = TypeVar("F", bound=Callable[..., Any])
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
_CORRUPT_WORDS = ("malformed", "not a database", "corrupt")
WHAT_TO_DO = "restore the index from a backup (bertdot index backup) and restart"


class StoreDamaged(DataLoss):
    """The passage store's file is damaged. The message shown to callers names no path; the
    server's log line names the file and what to do."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(f"the index's passage store is damaged; {WHAT_TO_DO}")
        self.path = path
        self.detail = detail

    def log_line(self) -> str:
        return f"passage store {self.path} is damaged ({self.detail}): {WHAT_TO_DO}"


def is_corruption(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return int(code) & 0xFF in _CORRUPT_CODES  # extended codes keep the primary below
    return any(word in str(exc).lower() for word in _CORRUPT_WORDS)


def checked(method: F) -> F:
    """Turn SQLite corruption errors of a store method into `StoreDamaged` (through the
    store's `_damaged`, which also tells its listener); generators are checked as they run."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def generator(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                yield from method(self, *args, **kwargs)
            except sqlite3.DatabaseError as exc:
                if not is_corruption(exc):
                    raise
                raise self._damaged(exc) from exc

        return generator  # type: ignore[return-value]

    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                raise
            raise self._damaged(exc) from exc

    return call  # type: ignore[return-value]
