"""The write path of the serving core: validate → encode → apply → acknowledge. No gRPC here.

Encoding is bulk work of the encoder thread's scheduler: it runs in bounded slices, and the
queries that arrive meanwhile go between them instead of waiting for all of it. Applying
runs in the search thread, the one thread that touches the graph, so an insertion never
overlaps a search (the Index lock is the second guard). The answer, with the write's
sequence number, is given only after the store has committed the write with
synchronous=FULL (durable) and the graph has it; a crash between the commit and the graph
update is repaired by the replay at the next start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bertdot.server.engine.admission import BulkAdmission
from bertdot.server.engine.answers import DeleteAnswer, UpsertAnswer
from bertdot.server.engine.offload import microseconds, run_on
from bertdot.server.engine.query_batcher import QueryBatcher
from bertdot.server.engine.threads import Workers
from bertdot.server.engine.validation import Limits, check_count, check_id, check_text
from bertdot.server.errors import DeadlineExpired, FailedPrecondition, InvalidArgument, quoted
from bertdot.server.index.corpus import Passage

if TYPE_CHECKING:
    from bertdot.server.index.index import Index

READ_ONLY_MESSAGE = "server is read-only"


def check_unique(field: str, ids: Sequence[str]) -> None:
    seen: set[str] = set()
    for pid in ids:
        if pid in seen:
            raise InvalidArgument(f"{field}: id {quoted(pid)} appears more than once")
        seen.add(pid)


def check_passages(passages: Sequence[Passage], limits: Limits) -> None:
    check_count("passages", passages, limits.max_texts)
    for i, p in enumerate(passages):
        check_id(f"passages[{i}].id", p.id)
        check_text(f"passages[{i}].text", p.text, limits.max_text_chars)
        if p.title is not None and len(p.title) > limits.max_text_chars:
            raise InvalidArgument(
                f"passages[{i}].title: {len(p.title)} characters exceeds the limit of "
                f"{limits.max_text_chars}"
            )
    check_unique("passages", [p.id for p in passages])


def check_ids(ids: Sequence[str], limits: Limits) -> None:
    check_count("ids", ids, limits.max_candidates)
    for i, pid in enumerate(ids):
        check_id(f"ids[{i}]", pid)
    check_unique("ids", ids)


class Writes:
    """Upsert and Delete; each write holds a place of the bulk admission while it runs."""

    def __init__(
        self,
        batcher: QueryBatcher,
        index: Index | None,
        workers: Workers,
        limits: Limits,
        bulk: BulkAdmission,
        read_only: bool = False,
    ) -> None:
        self.batcher = batcher
        self.index = index
        self.search_thread = workers.search
        self.limits = limits
        self.bulk = bulk
        self.read_only = read_only

    def _writable(self) -> Index:
        if self.index is None:
            raise FailedPrecondition("this server has no index loaded (encode and rerank only)")
        if self.read_only:
            raise FailedPrecondition(READ_ONLY_MESSAGE)
        if self.index.store.damage is not None:  # no write goes into a damaged store
            raise self.index.store.damage
        return self.index

    @staticmethod
    def _check_deadline(deadline: float | None) -> None:
        if deadline is not None and asyncio.get_running_loop().time() >= deadline:
            raise DeadlineExpired("deadline passed before the write was applied; nothing written")

    async def upsert(self, passages: Sequence[Passage], deadline: float | None) -> UpsertAnswer:
        started = time.perf_counter()
        index = self._writable()
        check_passages(passages, self.limits)
        with self.bulk.admit():
            vectors, truncated = await self._encode(passages, deadline)
            self._check_deadline(deadline)
            t_apply = time.perf_counter()
            sequence = await run_on(self.search_thread, index.upsert, list(passages), vectors)
            done = time.perf_counter()
        return UpsertAnswer(
            upserted=len(passages),
            truncated=truncated,
            sequence=sequence,
            encode_us=microseconds(t_apply - started),
            apply_us=microseconds(done - t_apply),
            total_us=microseconds(done - started),
        )

    async def _encode(
        self, passages: Sequence[Passage], deadline: float | None
    ) -> tuple[np.ndarray, int]:
        done = await self.batcher.encode_bulk([p.encoder_input() for p in passages], deadline)
        return done.encoded.vectors, int(done.encoded.truncated.sum())

    async def delete(self, ids: Sequence[str], deadline: float | None) -> DeleteAnswer:
        index = self._writable()
        check_ids(ids, self.limits)
        with self.bulk.admit():
            self._check_deadline(deadline)
            removed = await run_on(self.search_thread, index.delete, list(ids))
        found = set(removed.ids)
        return DeleteAnswer(len(found), [i for i in ids if i not in found], removed.sequence)
