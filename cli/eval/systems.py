"""Produce the run an evaluation scores: retrieval or re-ranking, in process or over gRPC.

Both systems answer the same two questions, so the CLI (and a test) can swap one for the
other: `retrieve(queries, k, ef)` and `rerank(queries, candidates)`. A re-ranking run keeps
every candidate, scored by the model's similarity, whatever the candidates' first-stage order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from bertdot.cli.eval.data import Corpus, DatasetError, Run
from bertdot.export.reference import ModelSpec

Candidates = Mapping[str, Sequence[str]]  # query id → candidate passage ids


def candidate_texts(corpus: Corpus | None, candidates: Candidates, name: str) -> dict[str, str]:
    """The encoder input of every candidate, read once from the dataset's corpus."""
    if corpus is None:
        raise DatasetError(name, None, "re-ranking by text needs the corpus (corpus.jsonl)")
    wanted = {doc for docs in candidates.values() for doc in docs}
    texts = corpus.texts(wanted)
    missing = sorted(wanted - texts.keys())
    if missing:
        raise DatasetError(
            name, None, f"{len(missing)} candidate id(s) are not in the corpus: {missing[:5]}"
        )
    return texts


def _batches(items: Sequence[tuple[str, str]], size: int) -> Iterator[Sequence[tuple[str, str]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@dataclass
class LocalSystem:
    """The artifact on ONNX Runtime (the server's own Encoder) and, for retrieval, an index.

    Re-ranking reads candidate vectors from the index when there is one (what the server's
    Rerank by id does, and no re-encoding); otherwise it encodes the corpus texts.
    """

    encoder: Any  # bertdot.server.encoding.encoder.Encoder
    index: Any | None  # bertdot.server.index.index.Index
    corpus: Corpus | None
    name: str
    batch_size: int = 64
    progress: bool = False

    def spec(self) -> ModelSpec:
        m = self.encoder.manifest
        return ModelSpec(str(m.source.get("id")), m.pooling, m.similarity, m.max_length)

    def retrieve(self, queries: Mapping[str, str], k: int, ef: int | None) -> Run:
        if self.index is None:
            raise ValueError("retrieval in process needs --index (or re-rank with --candidates)")
        run: Run = {}
        items = list(queries.items())
        bar = tqdm(total=len(items), unit="query", desc="retrieve", disable=not self.progress)
        for batch in _batches(items, self.batch_size):
            vectors = self.encoder.encode([text for _, text in batch]).vectors
            hits = self.index.search(vectors, k, max(ef or self.index.default_ef, k), False)
            for (qid, _), row in zip(batch, hits, strict=True):
                run[qid] = {hit.id: hit.score for hit in row}
            bar.update(len(batch))
        bar.close()
        return run

    def rerank(self, queries: Mapping[str, str], candidates: Candidates) -> Run:
        texts: Mapping[str, str] = {}
        if self.index is None:
            texts = candidate_texts(self.corpus, candidates, self.name)
        run: Run = {}
        judged = [qid for qid in queries if candidates.get(qid)]
        for qid in tqdm(judged, unit="query", desc="rerank", disable=not self.progress):
            docs = list(candidates[qid])
            query = self.encoder.encode([queries[qid]]).vectors[0]
            if self.index is not None:
                try:
                    vectors = self.index.get_vectors(docs)
                except KeyError as exc:
                    raise ValueError(f"query {qid}: {exc.args[0]}") from None
            else:
                vectors = self.encoder.encode([texts[d] for d in docs]).vectors
            scores = np.asarray(vectors, dtype=np.float32) @ query
            run[qid] = dict(zip(docs, scores.tolist(), strict=True))
        return run


@dataclass
class RemoteSystem:
    """A running bertdot server, through the sync client (search stream, Rerank)."""

    client: Any  # bertdot.client.sync.Client
    corpus: Corpus | None
    name: str
    workers: int = 8
    progress: bool = False

    def spec(self) -> ModelSpec:
        m = self.client.info().model
        return ModelSpec(m.source, m.pooling, m.similarity, m.max_length)

    def retrieve(self, queries: Mapping[str, str], k: int, ef: int | None) -> Run:
        from bertdot.client.types import Query

        wire = [Query(text, id=qid) for qid, text in queries.items()]
        results = self.client.search_many(wire, k=k, ef=ef, timeout=None)
        return {r.id: {hit.id: hit.score for hit in r.hits} for r in results}

    def rerank(self, queries: Mapping[str, str], candidates: Candidates) -> Run:
        """Candidates go as ids when the server holds an index, else as corpus texts."""
        from bertdot.client.types import PassageRef

        judged = [qid for qid in queries if candidates.get(qid)]
        by_id = self.client.info().index is not None
        texts = None if by_id else candidate_texts(self.corpus, candidates, self.name)

        def one(qid: str) -> tuple[str, dict[str, float]]:
            docs = list(candidates[qid])
            wire = [PassageRef(d) for d in docs] if texts is None else [texts[d] for d in docs]
            answer = self.client.rerank(queries[qid], wire)
            return qid, {docs[s.index]: s.score for s in answer.results}

        with ThreadPoolExecutor(self.workers) as pool:
            answers = pool.map(one, judged)
            bar = tqdm(answers, total=len(judged), unit="query", disable=not self.progress)
            return dict(bar)
