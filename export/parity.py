"""Compare an exported precision, served exactly as the server serves it, with PyTorch fp32."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bertdot.server.encoding.artifact import Parity

# Varied lengths, casing, punctuation and non-ASCII; the last one is built longer than
# any max length so truncation is part of every check.
PROBE_TEXTS = (
    "what is dense retrieval",
    "A",
    "How many calories are in a banana?",
    "The Margin-MSE loss distils a cross-encoder teacher into a dual-encoder student.",
    "Ünïcödé, émojis 🙂 and CJK 漢字 should tokenize the same way in both runtimes.",
    "definition of photosynthesis in plants and algae, with the light and dark reactions",
    " ".join(["Passages in MS MARCO are about sixty words long on average."] * 3),
)


def probe_texts(max_length: int) -> list[str]:
    long_text = " ".join(f"word{i % 50} and" for i in range(max_length + 16))
    return [*PROBE_TEXTS, long_text]


def cosines(reference: np.ndarray, candidate: np.ndarray) -> np.ndarray:
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    return np.asarray((ref * cand).sum(axis=1))


def measure(reference: np.ndarray, candidate: np.ndarray) -> Parity:
    return Parity(
        min_cosine=float(cosines(reference, candidate).min()),
        max_abs_diff=float(np.abs(reference - candidate).max()),
        texts=len(reference),
    )


def served_vectors(
    artifact_dir: Path, precision: str, texts: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """`texts` encoded by the server's own Encoder (CPU provider): vectors, truncation flags."""
    from bertdot.server.encoding.encoder import Encoder

    encoder = Encoder(artifact_dir, device="cpu", precision=precision)
    # Batches of mixed lengths: padding must not change any vector.
    encoded = encoder.encode(texts, batch_size=3)
    return encoded.vectors, encoded.truncated


def check_precision(
    artifact_dir: Path, precision: str, texts: Sequence[str], reference: np.ndarray
) -> tuple[Parity, np.ndarray]:
    """Measure one precision's parity; returns it and the per-text truncation flags."""
    vectors, truncated = served_vectors(artifact_dir, precision, texts)
    return measure(reference, vectors), truncated
