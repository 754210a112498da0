"""What the serving core answers: plain values, converted to messages by the transport."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from bertdot.server.index.index import Hit


@dataclass(frozen=True)
class Timings:
    queue_us: int = 0
    tokenize_us: int = 0
    encode_us: int = 0
    search_us: int = 0
    total_us: int = 0
    batch_size: int = 1


@dataclass(frozen=True)
class SearchAnswer:
    hits: list[Hit]
    token_count: int
    truncated: bool
    timings: Timings


@dataclass(frozen=True)
class EncodeAnswer:
    vectors: np.ndarray
    token_counts: list[int]
    truncated: list[bool]
    timings: Timings


@dataclass(frozen=True)
class Candidate:
    text: str | None = None
    passage_id: str | None = None


@dataclass(frozen=True)
class RerankedCandidate:
    index: int
    score: float
    passage_id: str = ""
    text: str = ""


@dataclass(frozen=True)
class RerankAnswer:
    results: list[RerankedCandidate]
    token_count: int
    truncated: bool
    candidates_encoded: int
    candidates_truncated: int
    timings: Timings


@dataclass(frozen=True)
class UpsertAnswer:
    upserted: int
    truncated: int
    sequence: int
    encode_us: int
    apply_us: int  # store commit + graph insertion
    total_us: int


@dataclass(frozen=True)
class DeleteAnswer:
    deleted: int
    not_found: list[str]
    sequence: int
