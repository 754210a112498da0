"""Bulk encoding in bounded slices: many texts of one request, a turn of the encoder at a time.

A bulk request (several texts to Encode, Rerank's candidate texts, an Upsert's passages)
is one job. Each turn the encoder thread gives it does a bounded amount of work: tokenize
the next texts up to a character budget and, once every text is tokenized, encode the
next slice, a group of texts of similar length whose padded size stays within the slice's
token budget. Between two turns the scheduler (`QueryBatcher`) serves the queries that
arrived meanwhile, so a query never waits behind more than one slice, however large the
request: a 256-text Encode of long passages held the encoder for seconds when it ran as one
call (10 s on MiniLM, CPU).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bertdot.server.encoding.encoder import Encoded
from bertdot.server.encoding.tokenization import TokenizedText, split_by_tokens

# Tokenizing is ~1% of encoding, but a text may hold 100,000 characters: bound it per turn.
TOKENIZE_CHARS_PER_TURN = 200_000
MAX_SLICE_ROWS = 256  # texts per ONNX Runtime call, however short they are


class SliceEncoder(Protocol):
    """What a bulk job needs from the encoder (`Encoder` satisfies it)."""

    @property
    def dim(self) -> int: ...

    def tokenize(self, texts: list[str]) -> list[TokenizedText]: ...

    def encode_tokenized(self, items: list[TokenizedText]) -> np.ndarray: ...


@dataclass
class BulkJob:
    texts: list[str]
    future: asyncio.Future[BulkResult]
    deadline: float | None  # loop.time() (= time.monotonic()) by which the caller gives up
    enqueued: float = field(default_factory=time.perf_counter)
    items: list[TokenizedText] = field(default_factory=list)
    groups: list[list[int]] | None = None  # the slices, planned once every text is tokenized
    next_group: int = 0
    vectors: np.ndarray | None = None
    working_s: float = 0.0  # time in this job's own turns
    turns: int = 0

    @property
    def done(self) -> bool:
        return self.groups is not None and self.next_group >= len(self.groups)

    def turn(self, encoder: SliceEncoder, slice_tokens: int) -> None:
        """Runs in the encoder thread: one bounded step of the job."""
        started = time.perf_counter()
        if self.groups is None:
            self._tokenize_some(encoder)
            if len(self.items) == len(self.texts):
                self.groups = split_by_tokens(self.items, slice_tokens, MAX_SLICE_ROWS)
                self.vectors = np.empty((len(self.texts), encoder.dim), dtype=np.float32)
        elif self.vectors is not None:
            rows = self.groups[self.next_group]
            self.vectors[rows] = encoder.encode_tokenized([self.items[i] for i in rows])
            self.next_group += 1
        self.turns += 1
        self.working_s += time.perf_counter() - started

    def _tokenize_some(self, encoder: SliceEncoder) -> None:
        start = end = len(self.items)
        chars = 0
        while end < len(self.texts) and (end == start or chars < TOKENIZE_CHARS_PER_TURN):
            chars += len(self.texts[end])
            end += 1
        self.items.extend(encoder.tokenize(self.texts[start:end]))

    def result(self) -> BulkResult:
        if self.vectors is None or not self.done:
            raise RuntimeError("bulk job read before it finished")
        if (
            self.vectors.shape != (len(self.texts), self.vectors.shape[1])
            or not np.isfinite(self.vectors).all()
        ):
            raise RuntimeError(f"encoder returned shape {self.vectors.shape} or non-finite values")
        encoded = Encoded(
            self.vectors,
            np.array([item.length for item in self.items], dtype=np.int64),
            np.array([item.truncated for item in self.items], dtype=bool),
        )
        waited = time.perf_counter() - self.enqueued - self.working_s
        return BulkResult(encoded, self.working_s, max(waited, 0.0), len(self.groups or ()))


@dataclass(frozen=True)
class BulkResult:
    encoded: Encoded
    encode_s: float  # the job's own turns: tokenizing and encoding
    queue_s: float  # waiting for turns while queries and other jobs went first
    slices: int
