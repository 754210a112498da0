"""The exact PyTorch ranking of the source checkpoint: what the served model should reproduce.

The reference encodes queries and passages with transformers in fp32 and ranks by brute-force
dot product, so the difference it shows against a served run is the sum of what export
(ONNX, fp16 or int8) and HNSW approximation cost, measured on the retrieval metric itself.
The encoder is export's (`bertdot.export.reference`), the top-k the index's exact search.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from bertdot.cli.eval.data import Corpus, Run
from bertdot.export.reference import ReferenceEncoder
from bertdot.server.index.exact import EXACT_CHUNK, RunningTopK


def _chunks(passages: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for item in passages:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def reference_retrieve(
    encoder: ReferenceEncoder,
    corpus: Corpus,
    queries: Mapping[str, str],
    k: int,
    batch_size: int = 64,
    progress: bool = False,
) -> Run:
    """Exact top-`k` over the whole corpus, keeping only a running top-`k` in memory."""
    qids = list(queries)
    best = RunningTopK(encoder.encode([queries[q] for q in qids], batch_size), k, object)
    bar = tqdm(unit="passage", desc="reference", disable=not progress)
    for chunk in _chunks(corpus.passages(), EXACT_CHUNK):
        ids = np.array([pid for pid, _ in chunk], dtype=object)
        best.add(ids, encoder.encode([text for _, text in chunk], batch_size))
        bar.update(len(chunk))
    bar.close()
    return {
        qid: dict(zip(row_ids.tolist(), row_scores.tolist(), strict=True))
        for qid, row_ids, row_scores in zip(qids, best.keys, best.scores, strict=True)
    }


def reference_rerank(
    encoder: ReferenceEncoder,
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    texts: Callable[[], Mapping[str, str]],
    batch_size: int = 64,
    progress: bool = False,
) -> Run:
    """Every candidate of every judged query scored by the PyTorch model."""
    judged = [qid for qid in queries if candidates.get(qid)]
    passages = texts()
    query_vectors = encoder.encode([queries[q] for q in judged], batch_size)
    run: Run = {}
    for qid, query in tqdm(
        zip(judged, query_vectors, strict=True),
        total=len(judged),
        desc="reference",
        disable=not progress,
    ):
        docs = list(candidates[qid])
        scores = encoder.encode([passages[d] for d in docs], batch_size) @ query
        run[qid] = dict(zip(docs, scores.tolist(), strict=True))
    return run
