"""What the index code needs from an encoder (duck-typed, so tests can use a fake and the
index code never imports ONNX Runtime)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class EncodedBatch(Protocol):
    @property
    def vectors(self) -> np.ndarray:
        """float32, shape (n, dim)."""

    @property
    def token_counts(self) -> np.ndarray: ...

    @property
    def truncated(self) -> np.ndarray:
        """bool, one per text: True where the text was cut at the model's maximum length."""


class TextEncoder(Protocol):
    """`bertdot.server.encoding.encoder.Encoder` satisfies this."""

    @property
    def dim(self) -> int: ...

    @property
    def similarity(self) -> str:
        """'dot' or 'cosine'."""

    @property
    def fingerprint(self) -> str:
        """Identity of the artifact: an index records it and refuses other models."""

    def encode(self, texts: Sequence[str]) -> EncodedBatch: ...
