"""The exact PyTorch ranking of the source checkpoint: what the served model should reproduce.

The reference encodes queries and passages with transformers in fp32 and ranks by brute-force
dot product, so the difference it shows against a served run is the sum of what export
(ONNX, fp16 or int8) and HNSW approximation cost, measured on the retrieval metric itself.
torch and transformers are imported only here (the `export` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from bertdot.server.eval_data import Corpus, Run
from bertdot.server.pooling import normalize, pool

INSTALL_HINT = "--reference needs torch and transformers: pip install 'bertdot[export]'"
_CHUNK = 8192  # passages scored against every query at once


@dataclass(frozen=True)
class ModelSpec:
    """What the reference must copy from the served model (its manifest or Info)."""

    source: str  # hub id or checkpoint directory
    pooling: str
    similarity: str
    max_length: int


class TorchEncoder:
    """fp32 PyTorch encoding with the pooling and similarity of the served model."""

    def __init__(
        self, spec: ModelSpec, model: str | None = None, device: str = "auto", batch_size: int = 64
    ) -> None:
        try:
            import torch
            from transformers import AutoModel
        except ImportError:
            raise ImportError(INSTALL_HINT) from None
        from bertdot.export.checkpoint import inspect_checkpoint
        from bertdot.export.tokenizer_file import load_reference_tokenizer

        info = inspect_checkpoint(model or spec.source)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self.spec = spec
        self.batch_size = batch_size
        self.tokenizer = load_reference_tokenizer(info.model_dir)
        self.model = AutoModel.from_pretrained(str(info.model_dir)).float().eval().to(device)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors in input order; batches of similar length, so padding costs little."""
        import torch

        out = np.empty((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                inputs = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.spec.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**inputs).last_hidden_state.float().cpu().numpy()
                mask = inputs["attention_mask"].cpu().numpy()
                out[rows] = pool(hidden, mask, self.spec.pooling)
        return normalize(out) if self.spec.similarity == "cosine" else out


def _chunks(passages: Iterator[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk: list[tuple[str, str]] = []
    for item in passages:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's `k` largest scores (unordered: the metrics sort)."""
    if scores.shape[1] <= k:
        return np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def reference_retrieve(
    encoder: TorchEncoder,
    corpus: Corpus,
    queries: Mapping[str, str],
    k: int,
    progress: bool = False,
) -> Run:
    """Exact top-`k` over the whole corpus, keeping only a running top-`k` in memory."""
    qids = list(queries)
    query_vectors = encoder.encode([queries[q] for q in qids])
    best_scores = np.zeros((len(qids), 0), dtype=np.float32)
    best_ids = np.zeros((len(qids), 0), dtype=object)
    bar = tqdm(unit="passage", desc="reference", disable=not progress)
    for chunk in _chunks(corpus.passages(), _CHUNK):
        ids = np.array([pid for pid, _ in chunk], dtype=object)
        scores = query_vectors @ encoder.encode([text for _, text in chunk]).T
        scores = np.concatenate([best_scores, scores], axis=1)
        all_ids = np.concatenate([best_ids, np.broadcast_to(ids, (len(qids), len(ids)))], axis=1)
        keep = _top(scores, k)
        best_scores = np.take_along_axis(scores, keep, axis=1)
        best_ids = np.take_along_axis(all_ids, keep, axis=1)
        bar.update(len(chunk))
    bar.close()
    return {
        qid: dict(zip(row_ids.tolist(), row_scores.tolist(), strict=True))
        for qid, row_ids, row_scores in zip(qids, best_ids, best_scores, strict=True)
    }


def reference_rerank(
    encoder: TorchEncoder,
    queries: Mapping[str, str],
    candidates: Mapping[str, Sequence[str]],
    texts: Callable[[], Mapping[str, str]],
    progress: bool = False,
) -> Run:
    """Every candidate of every judged query scored by the PyTorch model."""
    judged = [qid for qid in queries if candidates.get(qid)]
    passages = texts()
    query_vectors = encoder.encode([queries[q] for q in judged])
    run: Run = {}
    for qid, query in tqdm(
        zip(judged, query_vectors, strict=True),
        total=len(judged),
        desc="reference",
        disable=not progress,
    ):
        docs = list(candidates[qid])
        scores = encoder.encode([passages[d] for d in docs]) @ query
        run[qid] = dict(zip(docs, scores.tolist(), strict=True))
    return run
