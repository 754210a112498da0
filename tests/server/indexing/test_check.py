"""`index check`: recall against exact search, recommended ef, JSON report, CLI."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bertdot.server.index.corpus import Passage
from bertdot.server.index.index import Index, IndexManifest
from bertdot.server.indexing import commands as index_cli
from bertdot.server.indexing.build import build_index
from bertdot.server.indexing.check import check_index, read_queries, sample_queries
from tests.support.fakes import FakeEncoder, make_passages, make_queries, write_jsonl


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("check")
    corpus = write_jsonl(root / "c.jsonl", make_passages(1500))
    build_index(FakeEncoder(), corpus, root / "idx", M=8, progress=False, say=lambda _: None)
    return root / "idx"


@pytest.fixture
def index(index_dir: Path) -> Iterator[Index]:
    opened = Index.open(index_dir)
    yield opened
    opened.close()


def test_recall_rises_with_ef_and_recommendation_is_smallest_reaching_target(
    index: Index,
) -> None:
    queries = FakeEncoder().encode(make_queries(make_passages(1500), 100)).vectors
    report = check_index(index, queries, efs=[1500, 10, 64])
    assert list(report.recall) == [10, 64, 1500]  # sorted
    assert report.recall[10] < 0.99  # M=8 and ef=10 on clustered vectors: visibly approximate
    assert report.recall[1500] == 1.0  # ef = count explores the whole graph
    assert report.recommended_ef == min(ef for ef, r in report.recall.items() if r >= 0.99)
    assert all(ms > 0 for ms in report.p50_ms.values())
    assert check_index(index, queries, efs=[10], target=1.01).recommended_ef is None


def test_recall_counts_the_overlap_with_exact(index: Index) -> None:
    """Cross-check against a recall computed here from search and exact search directly."""
    queries = FakeEncoder().encode(make_queries(make_passages(1500), 30, seed=4)).vectors
    exact, _ = index.exact_labels(queries, 10)
    approx, _ = index.search_labels(queries, 10, ef=12)
    expected = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx, exact, strict=True)])
    assert expected < 1.0
    assert check_index(index, queries, efs=[12]).recall[12] == pytest.approx(expected)


def test_tied_scores_count_as_hits(tmp_path: Path) -> None:
    """Duplicate passages score alike; whichever of them HNSW returns is a true neighbour."""
    passages = [Passage(f"d{i}", None, "the same words every time") for i in range(60)]
    passages += make_passages(40, titled=False)
    corpus = write_jsonl(tmp_path / "dups.jsonl", passages)
    build_index(FakeEncoder(), corpus, tmp_path / "idx", progress=False, say=lambda _: None)
    index = Index.open(tmp_path / "idx")
    query = FakeEncoder().encode(["the same words every time"]).vectors
    report = check_index(index, np.repeat(query, 5, axis=0), efs=[10, 100])
    assert report.recall == {10: 1.0, 100: 1.0}
    index.close()


def test_json_report_keys(index: Index, tmp_path: Path) -> None:
    vectors, source = sample_queries(index, samples=20)
    report = check_index(index, vectors, efs=[16, 32], source=source)
    report.write_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert set(data["recall@10"]) == set(data["p50_ms"]) == {"16", "32"}
    assert data["recommended_ef"] in (16, 32, None)
    assert data["queries"] == 20
    assert "recommended ef" in report.table() or "no ef reached" in report.table()


def test_query_sources(index: Index) -> None:
    noisy, source = sample_queries(index, samples=50, seed=3)
    assert noisy.shape == (50, index.dim) and "noise" in source
    # Each query is a stored vector moved by about 5% of its length.
    stored = index.graph.get_vectors(index.store.labels())
    gaps = np.linalg.norm(noisy[:, None, :] - stored[None, :, :], axis=2).min(axis=1)
    assert (gaps < 0.1 * np.linalg.norm(stored, axis=1).mean()).all()
    assert (gaps > 0).all()
    encoded, source = sample_queries(index, encoder=FakeEncoder(), samples=10)
    assert encoded.shape == (10, index.dim) and "sampled passages" in source
    # A passage's own text is its own nearest neighbour.
    top, _ = index.exact_labels(encoded, 1)
    np.testing.assert_allclose(index.graph.get_vectors(top[:, 0]), encoded, rtol=1e-6)
    texts, source = sample_queries(index, encoder=FakeEncoder(), query_texts=["w1 w2", "w3"])
    assert texts.shape == (2, index.dim) and "from file" in source
    with pytest.raises(ValueError, match="need an encoder"):
        sample_queries(index, query_texts=["q"])


def test_read_queries(tmp_path: Path) -> None:
    (tmp_path / "q.txt").write_text("first query\n\n  second  \n")
    assert read_queries(tmp_path / "q.txt") == ["first query", "second"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="holds no queries"):
        read_queries(tmp_path / "empty.txt")


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bertdot")
    index_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_cli_check_writes_json_and_sets_default(
    index_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "idx"
    copy.mkdir()
    for f in index_dir.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    out = tmp_path / "report.json"
    argv = ["index", "check", str(copy), "--samples", "30", "--ef", "8,1500"]
    assert _cli([*argv, "--json", str(out), "--set-default"]) == 0
    data = json.loads(out.read_text())
    assert set(data) >= {"recall@10", "p50_ms", "recommended_ef"}
    assert set(data["recall@10"]) == {"8", "1500"}
    assert IndexManifest.read(copy).ef_search == data["recommended_ef"]
    assert "recommended ef" in capsys.readouterr().out


def test_cli_check_errors(
    index_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _cli(["index", "check", str(tmp_path / "missing")]) == 2
    assert "not a bertdot index" in capsys.readouterr().err
    monkeypatch.setattr(index_cli, "_encoder", lambda args: FakeEncoder(seed=5))
    assert _cli(["index", "check", str(index_dir), "--model", "m"]) == 2
    assert "built with another model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _cli(["index", "check", str(index_dir), "--ef", "0,16"])


def test_cli_module_imports_no_heavy_dependency() -> None:
    code = (
        "import sys, bertdot.server.indexing.commands\n"
        "heavy = {'numpy', 'hnswlib', 'onnxruntime', 'tqdm'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
