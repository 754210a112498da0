"""Vector shards: passages with the vectors computed for them elsewhere, for `index import`.

A shard folder holds `shards.json` (the artifact fingerprint, similarity and dimension the
vectors were made with) and numbered parts, each a pair written by one encoder task:

    part-00000.jsonl   one passage per line, BEIR-style: {"_id", "title", "text"}
    part-00000.npy     float32 vectors, one row per line of the .jsonl, in order

A part is complete when its `.npy` exists: it is written after the `.jsonl`, each to a
temporary name renamed into place, so a task killed midway leaves no part that looks done
(and a resumed encode redoes only the parts without one). Vectors are read memory-mapped,
so an import holds one batch in memory, not the corpus.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bertdot.server.index.corpus import CorpusError, Passage, read_corpus

SHARDS_NAME = "shards.json"
FORMAT = "bertdot-vector-shards/1"


class ShardError(ValueError):
    """A shard folder is missing, incomplete, inconsistent, or made with another model."""


@dataclass(frozen=True)
class ShardsInfo:
    fingerprint: str
    similarity: str
    dim: int
    model: str = ""  # the artifact's source, for people reading the file
    format: str = FORMAT

    @classmethod
    def read(cls, folder: Path) -> ShardsInfo:
        path = folder / SHARDS_NAME
        if not path.is_file():
            raise ShardError(f"{folder} is not a vector shard folder: {SHARDS_NAME} not found")
        try:
            info = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, TypeError) as exc:
            raise ShardError(f"{path} is not readable: {exc}") from exc
        if info.format != FORMAT:
            raise ShardError(f"{path}: format {info.format!r} is not {FORMAT!r}")
        return info

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(folder / SHARDS_NAME, (json.dumps(asdict(self), indent=2) + "\n").encode())

    def check_model(self, fingerprint: str, similarity: str, dim: int) -> None:
        if (self.fingerprint, self.similarity, self.dim) != (fingerprint, similarity, dim):
            raise ShardError(
                f"the vectors were made with another model (artifact fingerprint "
                f"{self.fingerprint}, {self.similarity}, dim {self.dim}); this model is "
                f"{fingerprint} ({similarity}, dim {dim}): re-encode with this model"
            )


def part_paths(folder: Path, number: int) -> tuple[Path, Path]:
    stem = folder / f"part-{number:05d}"
    return stem.with_suffix(".jsonl"), stem.with_suffix(".npy")


def write_part(folder: Path, number: int, passages: Sequence[Passage], vectors: np.ndarray) -> None:
    """Write one part: texts first, vectors last (the vectors mark the part complete)."""
    if vectors.shape[0] != len(passages) or vectors.dtype != np.float32:
        raise ShardError(f"part {number}: {len(passages)} passages but vectors {vectors.shape}")
    texts, array = part_paths(folder, number)
    lines = "".join(
        json.dumps({"_id": p.id, "title": p.title or "", "text": p.text}, ensure_ascii=False) + "\n"
        for p in passages
    )
    _write_atomic(texts, lines.encode("utf-8"))
    tmp = array.with_name(array.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, vectors, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, array)


def complete_parts(folder: Path) -> list[int]:
    return sorted(int(p.stem.split("-")[1]) for p in folder.glob("part-*.npy"))


def read_parts(
    folder: Path, info: ShardsInfo, batch: int = 4096
) -> Iterator[tuple[list[Passage], np.ndarray]]:
    """(passages, vectors) in batches, part after part in number order, each part checked:
    its vectors' shape and values, and one vector per passage."""
    for number in complete_parts(folder):
        texts, array = part_paths(folder, number)
        try:
            vectors = np.load(array, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ShardError(f"{array} is not readable: {exc}") from exc
        if vectors.ndim != 2 or vectors.shape[1] != info.dim or vectors.dtype != np.float32:
            raise ShardError(
                f"{array}: vectors {vectors.shape} {vectors.dtype}, expected float32 × {info.dim}"
            )
        if not texts.is_file():
            raise ShardError(f"{texts} is missing beside {array.name}")
        records = read_corpus(texts)
        done = 0
        while True:
            passages = [r.passage for _, r in zip(range(batch), records, strict=False)]
            if not passages:
                break
            rows = np.asarray(vectors[done : done + len(passages)], dtype=np.float32)
            if len(rows) != len(passages) or not np.isfinite(rows).all():
                raise ShardError(
                    f"{array}: fewer vectors than {texts.name} has passages, or non-finite values"
                )
            done += len(passages)
            yield passages, rows
        if done != len(vectors):
            raise ShardError(
                f"{array}: {len(vectors)} vectors but {texts.name} has {done} passages"
            )


def count_passages(folder: Path) -> int:
    """Passages in the complete parts (their vector counts, read from the .npy headers)."""
    return sum(
        int(np.load(part_paths(folder, n)[1], mmap_mode="r").shape[0])
        for n in complete_parts(folder)
    )


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


__all__ = ["CorpusError", "ShardError", "ShardsInfo", "complete_parts", "count_passages",
           "part_paths", "read_parts", "write_part"]  # fmt: skip
