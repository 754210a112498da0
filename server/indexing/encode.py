"""`bertdot index encode`: a corpus → vector shards, in parts, resumable part by part.

The corpus is cut into parts of `part_size` lines (by byte offset, found in one pass over
the file); each part is read, encoded and written as a shard part (`shards.py`) by one task.
A part whose vectors are already written is skipped, so a killed encode resumes where it
stopped, and parts can run anywhere that sees the corpus and the output folder: in this
process, or on a Ray cluster (`ray_encode.py`), one actor per GPU or group of cores.
`bertdot index import` then builds the index from the shards without encoding anything.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertdot.server.index.corpus import GZIP_MAGIC, CorpusError, read_corpus_part
from bertdot.server.indexing.protocols import TextEncoder
from bertdot.server.indexing.shards import ShardsInfo, part_paths, write_part

PART_LINES = 10_000


@dataclass(frozen=True)
class Part:
    number: int
    offset: int  # byte offset of its first line
    first_line: int  # 1-based line number of its first line
    lines: int


def plan_parts(corpus: Path, part_size: int = PART_LINES) -> list[Part]:
    """Cut a plain corpus into parts of `part_size` lines (one pass, no parsing)."""
    with open(corpus, "rb") as handle:
        if handle.read(2) == GZIP_MAGIC:
            raise CorpusError(corpus, 1, "compressed: parts need byte offsets; gunzip it first")
        handle.seek(0)
        parts: list[Part] = []
        offset, line = 0, 1
        while True:
            start, count = offset, 0
            for raw in handle:
                offset += len(raw)
                count += 1
                if count == part_size:
                    break
            if count == 0:
                return parts
            parts.append(Part(len(parts), start, line, count))
            line += count


def encode_part(
    encoder: TextEncoder, corpus: Path, part: Part, out: Path, batch_size: int = 64
) -> int:
    """Encode one part into the shard folder `out` unless it is there already; returns the
    passages it wrote (0 when skipped)."""
    if part_paths(out, part.number)[1].is_file():
        return 0
    passages = [
        r.passage for r in read_corpus_part(corpus, part.offset, part.first_line, part.lines)
    ]
    if not passages:
        return 0
    vectors = np.empty((len(passages), encoder.dim), dtype=np.float32)
    for start in range(0, len(passages), batch_size):
        batch = passages[start : start + batch_size]
        vectors[start : start + len(batch)] = encoder.encode(
            [p.encoder_input() for p in batch]
        ).vectors
    write_part(out, part.number, passages, vectors)
    return len(passages)


def encode_shards(
    encoder: TextEncoder,
    corpus: Path,
    out: Path,
    *,
    part_size: int = PART_LINES,
    batch_size: int = 64,
    source: str = "",
    say: Callable[[str], None] = print,
) -> int:
    """Every part of `corpus`, in this process; returns the passages encoded now."""
    parts = prepare(encoder, corpus, out, part_size, source)
    started, written = time.perf_counter(), 0
    for part in parts:
        written += encode_part(encoder, corpus, part, out, batch_size)
    seconds = time.perf_counter() - started
    say(f"{len(parts)} parts in {out}: {written:,} passages encoded now in {seconds:.1f} s")
    return written


def prepare(model: TextEncoder, corpus: Path, out: Path, part_size: int, source: str) -> list[Part]:
    """Plan the parts and claim the folder for this model (or check it was made with it)."""
    if not corpus.is_file():
        raise FileNotFoundError(f"corpus {corpus} not found")
    info = ShardsInfo(model.fingerprint, model.similarity, model.dim, source)
    if out.exists() and any(out.iterdir()):
        ShardsInfo.read(out).check_model(model.fingerprint, model.similarity, model.dim)
    else:
        info.write(out)
    return plan_parts(corpus, part_size)
