"""Pooling of the encoder's last hidden states into one vector per text (numpy only)."""

from __future__ import annotations

import numpy as np


def pool(hidden: np.ndarray, attention_mask: np.ndarray, pooling: str) -> np.ndarray:
    """Pool `hidden` (batch, seq, dim) as the manifest says: `cls` or masked `mean`.

    Padding positions never contribute to `mean`, so a text pools to the same vector
    whatever batch it was padded into.
    """
    if pooling == "cls":
        return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)
    if pooling == "mean":
        mask = attention_mask[:, :, None].astype(np.float32)
        summed = (hidden.astype(np.float32) * mask).sum(axis=1)
        counts = np.clip(mask.sum(axis=1), 1e-9, None)
        return (summed / counts).astype(np.float32)
    raise ValueError(f"unknown pooling {pooling!r} (expected 'cls' or 'mean')")


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Scale rows to unit length, so that a dot product is the cosine similarity."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)
