"""Typed export errors: each carries a message a user can act on."""

from __future__ import annotations


class ExportError(Exception):
    """Export cannot proceed (bad input, unsupported checkpoint, unwritable output)."""


class ParityError(ExportError):
    """An exported precision differs from PyTorch by more than its threshold allows."""

    def __init__(self, precision: str, min_cosine: float, threshold: float) -> None:
        super().__init__(
            f"{precision} parity check failed: min cosine vs PyTorch fp32 is "
            f"{min_cosine:.6f}, below the threshold {threshold}"
        )
        self.precision = precision
        self.min_cosine = min_cosine
        self.threshold = threshold
