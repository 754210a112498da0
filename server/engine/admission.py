"""The bound bulk requests share with single queries.

Single queries wait in the query batcher's queue, whose length is bounded; a bulk request
(several texts to Encode, Rerank's candidates, an Upsert or Delete) counts as one more
waiter while it runs, so the server refuses with Overloaded once the two together reach
the bound instead of letting latency grow without limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from bertdot.server.engine.query_batcher import QueryBatcher, queue_full
from bertdot.server.errors import Overloaded


class BulkAdmission:
    def __init__(self, batcher: QueryBatcher) -> None:
        self._batcher = batcher
        self.in_flight = 0

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place for the duration of one bulk request; refuse when none is free."""
        if self.in_flight + self._batcher.depth >= self._batcher.max_queue:
            raise Overloaded(queue_full(self._batcher.max_queue))
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
