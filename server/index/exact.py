"""Exact top-k by brute force, in bounded memory: the ground truth HNSW is measured against.

One running top-k serves every exact search of the project: the graph's fallback for a
query it cannot fully answer, `Index.exact_labels` (what `bertdot index check` measures
recall against) and `bertdot eval --reference` over a whole corpus. Candidates arrive in
chunks; only the best `k` per query are kept between chunks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EXACT_CHUNK = 16384  # vectors per step of a brute-force scan


def top_k_columns(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the `k` best scores per row, best first."""
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((len(scores), 0), dtype=np.int64)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


class RunningTopK:
    """The best `k` keys per query over candidates added chunk by chunk."""

    def __init__(self, queries: np.ndarray, k: int, key_dtype: type | np.dtype = np.int64) -> None:
        self.queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        self.k = k
        self.keys = np.zeros((len(self.queries), 0), dtype=key_dtype)
        self.scores = np.zeros((len(self.queries), 0), dtype=np.float32)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Score one chunk of candidates (`keys[i]` has vector `vectors[i]`) and keep the best."""
        scores = np.concatenate([self.scores, self.queries @ vectors.T], axis=1)
        tiled = np.broadcast_to(keys, (len(self.queries), len(keys)))
        top = top_k_columns(scores, self.k)
        self.scores = np.take_along_axis(scores, top, axis=1)
        self.keys = np.take_along_axis(np.concatenate([self.keys, tiled], axis=1), top, axis=1)


def exact_top_k(
    queries: np.ndarray,
    k: int,
    labels: np.ndarray,
    vectors_of: Callable[[np.ndarray], np.ndarray],
    space: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-`k` labels and scores per query among `labels`, whose vectors
    `vectors_of` reads `EXACT_CHUNK` at a time (memory stays bounded); scores are the
    graph's (dot products; cosines in the cosine space)."""
    queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if space == "cosine":  # hnswlib normalises queries for this space too
        queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
    best = RunningTopK(queries, k)
    for start in range(0, len(labels), EXACT_CHUNK):
        chunk = labels[start : start + EXACT_CHUNK]
        best.add(chunk, vectors_of(chunk))
    return best.keys, best.scores
