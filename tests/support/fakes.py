"""A deterministic fake encoder, synthetic corpora and a reusable recall measurement.

The fake hashes each word into a fixed random embedding table and sums the embeddings of a
text's words: texts sharing words get similar vectors, so a topical corpus gives clustered
vectors with real neighbourhood structure (closer to encoder output than uniform noise).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bertdot.server.index.corpus import Passage
from bertdot.server.index.index import DEFAULT_EF, Index
from bertdot.server.indexing.check import CheckReport, check_index
from bertdot.server.indexing.protocols import TextEncoder

_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class FakeEncoded:
    vectors: np.ndarray
    token_counts: np.ndarray
    truncated: np.ndarray


class FakeEncoder:
    """Satisfies `bertdot.server.indexing.protocols.TextEncoder`; `delay` seconds per call simulates
    a slow model; `encoded` counts the texts it was asked to encode."""

    def __init__(
        self,
        dim: int = 32,
        similarity: str = "dot",
        *,
        seed: int = 0,
        buckets: int = 4096,
        max_length: int = 64,
        delay: float = 0.0,
    ) -> None:
        self.dim = dim
        self.similarity = similarity
        self.fingerprint = f"fake-{similarity}-{dim}-{seed}"
        self.max_length = max_length
        self.delay = delay
        self.encoded = 0
        self._table = np.random.default_rng(seed).normal(size=(buckets, dim)).astype(np.float32)
        self._buckets: dict[str, int] = {}

    def _bucket(self, word: str) -> int:
        found = self._buckets.get(word)
        if found is None:
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            found = self._buckets[word] = int.from_bytes(digest, "little") % len(self._table)
        return found

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> FakeEncoded:
        if self.delay:
            time.sleep(self.delay)
        self.encoded += len(texts)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        counts = np.zeros(len(texts), dtype=np.int64)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            counts[row] = len(words)
            kept = [self._bucket(w) for w in words[: self.max_length]] or [0]
            vectors[row] = self._table[kept].sum(axis=0) * (3.0 / np.sqrt(len(kept)))
        if self.similarity == "cosine":
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return FakeEncoded(vectors, counts, counts > self.max_length)


def make_passages(n: int, *, seed: int = 0, topics: int = 40, titled: bool = True) -> list[Passage]:
    """Topical synthetic passages: half topic words, half Zipf-distributed common words."""
    rng = np.random.default_rng(seed)
    vocabulary = [f"w{i}" for i in range(6000)]
    topic_words = [rng.choice(vocabulary, size=60, replace=False) for _ in range(topics)]
    zipf = 1.0 / np.arange(1, len(vocabulary) + 1)
    zipf /= zipf.sum()
    passages = []
    for i in range(n):
        topic = topic_words[rng.integers(topics)]
        length = int(rng.integers(15, 50))
        words = list(rng.choice(topic, size=length // 2)) + list(
            rng.choice(vocabulary, size=length - length // 2, p=zipf)
        )
        rng.shuffle(words)
        title = f"title {words[0]}" if titled and i % 3 == 0 else None
        passages.append(Passage(f"p{i}", title, " ".join(words)))
    return passages


def make_queries(passages: Sequence[Passage], n: int, *, seed: int = 1) -> list[str]:
    """Short keyword queries: 3–6 words of a random passage."""
    rng = np.random.default_rng(seed)
    queries = []
    for _ in range(n):
        words = passages[int(rng.integers(len(passages)))].text.split()
        queries.append(" ".join(rng.choice(words, size=int(rng.integers(3, 7)))))
    return queries


def write_jsonl(path: Path, passages: Sequence[Passage], *, gz: bool = False) -> Path:
    lines = [
        json.dumps({"_id": p.id, "title": p.title or "", "text": p.text}) + "\n" for p in passages
    ]
    data = "".join(lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_tsv(path: Path, passages: Sequence[Passage], *, gz: bool = False) -> Path:
    data = "".join(f"{p.id}\t{p.text}\n" for p in passages).encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def measure_recall(
    encoder: TextEncoder,
    passages: Sequence[Passage],
    workdir: Path,
    *,
    query_texts: Sequence[str] | None = None,
    efs: Sequence[int] = (DEFAULT_EF,),
    M: int = 16,
    ef_construction: int = 200,
) -> CheckReport:
    """Build an index of `passages` with `encoder` and measure HNSW recall@10 against exact
    search. Reusable with any encoder (the fake here, the real ONNX one in slower tests)."""
    from bertdot.server.indexing.build import build_index

    corpus = write_jsonl(workdir / "corpus.jsonl", passages)
    out = workdir / "index"
    build_index(
        encoder,
        corpus,
        out,
        M=M,
        ef_construction=ef_construction,
        progress=False,
        say=lambda _: None,
    )
    index = Index.open(out)
    try:
        texts = list(query_texts) if query_texts is not None else make_queries(passages, 200)
        vectors = encoder.encode(texts).vectors
        return check_index(index, vectors, efs=efs, source="test queries")
    finally:
        index.close()
