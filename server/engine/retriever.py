"""The serving core (the data plane): search, encode, re-rank, describe. No gRPC here.

The transport converts requests into calls on `Retriever` and its answers back into
messages; everything here is testable and benchmarkable without a channel. Model work
runs in the encoder thread (one ONNX Runtime call at a time: its own threads use the
cores), index work in the search thread (hnswlib's ef is a setting of the whole graph,
so searches with different ef must not interleave, and writes must not run beside them).
One exception saves a lone query two thread hand-offs: when nothing else waits, the
encoder thread searches its vector itself, between the search thread's jobs, if that thread
is idle (`QueryBatcher` follow-ups, `IndexThread.run_if_idle`).
Writes (`upsert`, `delete`) follow the same split; their path is `Retriever.writes`
(`writes.py`), which shares the queue bound with bulk reads (`admission.py`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from bertdot.server.encoding.encoder import Encoder
from bertdot.server.engine.admission import BulkAdmission
from bertdot.server.engine.answers import (
    Candidate,
    EncodeAnswer,
    RerankAnswer,
    RerankedCandidate,
    SearchAnswer,
    Timings,
)
from bertdot.server.engine.bulk import BulkResult
from bertdot.server.engine.offload import microseconds, run_on
from bertdot.server.engine.query_batcher import EncodedText, QueryBatcher
from bertdot.server.engine.search_batcher import SearchBatcher
from bertdot.server.engine.threads import Workers
from bertdot.server.engine.validation import (
    Limits,
    check_count,
    check_ef,
    check_id,
    check_k,
    check_text,
)
from bertdot.server.engine.writes import Writes
from bertdot.server.errors import FailedPrecondition, NotFound, quoted

if TYPE_CHECKING:
    from bertdot.server.index.index import Hit, Index


class Retriever:
    def __init__(
        self,
        encoder: Encoder,
        index: Index | None,
        batcher: QueryBatcher,
        workers: Workers,
        limits: Limits | None = None,
        read_only: bool = False,
    ) -> None:
        self.encoder = encoder
        self.index = index
        self.batcher = batcher
        self.workers = workers
        self.limits = limits or Limits()
        self.read_only = read_only
        self._searches_in_flight = 0  # being encoded; read by the encoder thread
        # Started on first use (it needs the running event loop); never used without an index.
        self.searches = SearchBatcher(index, workers.search)
        self.bulk = BulkAdmission(batcher)
        self.writes = Writes(batcher, index, workers, self.limits, self.bulk, read_only)

    def _require_index(self) -> Index:
        if self.index is None:
            raise FailedPrecondition("this server has no index loaded (encode and rerank only)")
        return self.index

    async def encode_query(self, text: str, deadline: float | None) -> EncodedText:
        return await self.batcher.encode(text, deadline)

    async def search(
        self,
        query: str,
        k: int = 0,
        ef: int | None = None,
        return_text: bool = False,
        deadline: float | None = None,
    ) -> SearchAnswer:
        started = time.perf_counter()
        check_text("query", query, self.limits.max_query_chars)
        k = check_k(k, self.limits)
        ef = check_ef(ef, k, self.limits)
        index = self._require_index()

        def search_here(vector: np.ndarray) -> list[list[Hit]] | None:
            """In the encoder thread, for a query alone in the server: there the search
            would hold up no other query's encode. None: not alone, or the index thread is busy."""
            if self._searches_in_flight > 1:
                return None
            return self.workers.search.run_if_idle(
                index.search, vector[None, :], k, ef, return_text
            )

        self._searches_in_flight += 1
        try:
            encoded = await self.batcher.encode(query, deadline, search_here)
        finally:
            self._searches_in_flight -= 1
        if encoded.followed is not None:  # a lone query, searched in the encoder thread
            hits = encoded.followed[0]
            search_us = encoded.follow_us
        else:
            t_search = time.perf_counter()
            hits = await self.searches.search(encoded.vector, k, ef, return_text)
            search_us = microseconds(time.perf_counter() - t_search)
        done = time.perf_counter()
        return SearchAnswer(
            hits=hits,
            token_count=encoded.token_count,
            truncated=encoded.truncated,
            timings=Timings(
                queue_us=encoded.queue_us,
                tokenize_us=encoded.tokenize_us,
                encode_us=encoded.encode_us,
                search_us=search_us,
                total_us=microseconds(done - started),
                batch_size=encoded.batch_size,
            ),
        )

    async def encode(self, texts: Sequence[str], deadline: float | None = None) -> EncodeAnswer:
        started = time.perf_counter()
        check_count("texts", texts, self.limits.max_texts)
        for i, text in enumerate(texts):
            check_text(f"texts[{i}]", text, self.limits.max_text_chars)
        if len(texts) == 1:  # a single text joins the micro-batches of concurrent queries
            one = await self.batcher.encode(texts[0], deadline)
            timings = Timings(
                one.queue_us,
                one.tokenize_us,
                one.encode_us,
                0,
                microseconds(time.perf_counter() - started),
                one.batch_size,
            )
            return EncodeAnswer(one.vector[None, :], [one.token_count], [one.truncated], timings)
        done = await self._encode_bulk(list(texts), deadline)
        encoded = done.encoded
        return EncodeAnswer(
            encoded.vectors,
            encoded.token_counts.tolist(),
            encoded.truncated.tolist(),
            Timings(
                queue_us=microseconds(done.queue_s),
                encode_us=microseconds(done.encode_s),
                total_us=microseconds(time.perf_counter() - started),
                batch_size=len(texts),
            ),
        )

    async def _encode_bulk(self, texts: list[str], deadline: float | None) -> BulkResult:
        """Several texts of one request: bulk work, encoded in slices between query batches."""
        with self.bulk.admit():
            return await self.batcher.encode_bulk(texts, deadline)

    async def rerank(
        self,
        query: str,
        candidates: Sequence[Candidate],
        top_k: int = 0,
        return_text: bool = False,
        deadline: float | None = None,
    ) -> RerankAnswer:
        started = time.perf_counter()
        check_text("query", query, self.limits.max_query_chars)
        check_count("candidates", candidates, self.limits.max_candidates)
        by_text = [i for i, c in enumerate(candidates) if c.passage_id is None]
        by_id = [i for i, c in enumerate(candidates) if c.passage_id is not None]
        for i in by_text:
            check_text(
                f"candidates[{i}].text", candidates[i].text or "", self.limits.max_text_chars
            )
        for i in by_id:
            check_id(f"candidates[{i}].passage_id", candidates[i].passage_id or "")
        if top_k < 0:
            top_k = 0
        query_encoded = await self.batcher.encode(query, deadline)
        vectors = np.empty((len(candidates), self.encoder.dim), dtype=np.float32)
        texts = [""] * len(candidates)
        encode_s = 0.0
        truncated = 0
        if by_text:
            bulk = await self._encode_bulk([candidates[i].text or "" for i in by_text], deadline)
            encode_s = bulk.encode_s
            vectors[by_text] = bulk.encoded.vectors
            truncated = int(bulk.encoded.truncated.sum())
            for i in by_text:
                texts[i] = candidates[i].text or ""
        t_score = time.perf_counter()
        if by_id:
            ids = [candidates[i].passage_id or "" for i in by_id]
            stored, stored_texts = await run_on(
                self.workers.search, self._stored_vectors, ids, return_text
            )
            vectors[by_id] = stored
            for i, text in zip(by_id, stored_texts, strict=True):
                texts[i] = text
        scores = vectors @ query_encoded.vector
        order = np.argsort(-scores, kind="stable")
        if top_k:
            order = order[:top_k]
        results = [
            RerankedCandidate(
                index=int(i),
                score=float(scores[i]),
                passage_id=candidates[i].passage_id or "",
                text=texts[i] if return_text else "",
            )
            for i in order
        ]
        done = time.perf_counter()
        return RerankAnswer(
            results=results,
            token_count=query_encoded.token_count,
            truncated=query_encoded.truncated,
            candidates_encoded=len(by_text),
            candidates_truncated=truncated,
            timings=Timings(
                queue_us=query_encoded.queue_us,
                tokenize_us=query_encoded.tokenize_us,
                encode_us=query_encoded.encode_us + microseconds(encode_s),
                search_us=microseconds(done - t_score),
                total_us=microseconds(done - started),
                batch_size=query_encoded.batch_size,
            ),
        )

    async def stop(self) -> None:
        """Stop the search batcher (queries still waiting for it are refused)."""
        await self.searches.stop()

    def _stored_vectors(self, ids: list[str], with_text: bool) -> tuple[np.ndarray, list[str]]:
        index = self._require_index()
        known = index.get_passages(ids)  # id → passage, only for ids in the index
        missing = [i for i in ids if i not in known]
        if missing:
            shown = ", ".join(quoted(m) for m in missing[:5])
            raise NotFound(f"candidates: {len(missing)} passage id(s) not in the index: {shown}")
        vectors = index.get_vectors(ids)
        texts = [known[i].text or "" for i in ids] if with_text else [""] * len(ids)
        return vectors, texts
