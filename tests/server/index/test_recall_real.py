"""HNSW recall against exact search on real encoder vectors (the real MiniLM checkpoint)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bertdot.export.pipeline import ExportOptions, export_artifact
from bertdot.server.encoding.encoder import Encoder
from bertdot.server.index.corpus import Passage
from bertdot.server.index.index import DEFAULT_EF
from bertdot.server.indexing.builtin_corpus import passages
from tests.support.fakes import measure_recall
from tests.support.models import MINILM_DIR


@pytest.mark.slow
def test_recall_at_default_ef_on_real_minilm_vectors(tmp_path: Path) -> None:
    artifact = tmp_path / "minilm"
    # 128 tokens covers the ~60-word passages and keeps the encode affordable on a CPU.
    export_artifact(
        ExportOptions(model=str(MINILM_DIR), out=artifact, precisions=("fp32",), max_length=128),
        say=lambda _: None,
    )
    records = list(itertools.islice(passages(), 2200))
    corpus = [Passage(r["_id"], r["title"], r["text"]) for r in records[:2000]]
    # Queries: the opening words of held-out passages of the same documentation.
    queries = [" ".join(r["text"].split()[:10]) for r in records[2000:]]
    report = measure_recall(
        Encoder(artifact, device="cpu"), corpus, tmp_path, query_texts=queries, efs=(16, DEFAULT_EF)
    )
    print(report.table())
    assert report.recall[DEFAULT_EF] >= 0.99
    assert report.recall[16] < report.recall[DEFAULT_EF]  # the real vectors are not a toy case
