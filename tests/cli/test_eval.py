"""`bertdot eval`: metrics checked against hand formulas, re-ranking, reference, bad files."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections import namedtuple
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bertdot.cli.eval import commands as eval_cli
from bertdot.cli.eval.data import DatasetError, read_run
from bertdot.cli.eval.datasets import load_dataset
from bertdot.cli.eval.metrics import evaluate
from tests.support.models import VOCAB

PASSAGES = {
    "d1": "The capital of France is Paris, a city on the Seine.",
    "d2": "Bananas are rich in potassium and contain about 90 calories.",
    "d3": "Photosynthesis turns light, water and carbon dioxide into sugar.",
    "d4": "Paris hosted the Olympic Games in 1900, 1924 and 2024.",
    "d5": "A banana plant is a large herb, not a tree.",
    "d6": "Chlorophyll absorbs red and blue light in plant leaves.",
    "d7": "The Eiffel Tower was finished in 1889 for a world fair.",
    "d8": "Dense retrieval encodes queries and passages as vectors.",
}
QUERIES = {
    "q1": "what is the capital of france",
    "q2": "how many calories in a banana",
    "q3": "how does photosynthesis work",
    "q9": "a query without judgements is not evaluated",
}
QRELS = [("q1", "d1", 2), ("q1", "d4", 1), ("q1", "d7", 0), ("q2", "d2", 2), ("q2", "d5", 1)]
QRELS += [("q3", "d3", 1), ("q3", "d6", 2)]
CANDIDATES = {"q1": ["d1", "d2", "d7"], "q2": ["d5", "d8", "d3", "d2"], "q3": ["d6", "d1"]}


def _jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _write_beir(root: Path) -> Path:
    (root / "qrels").mkdir(parents=True)
    _jsonl(root / "corpus.jsonl", [{"_id": k, "title": "", "text": v} for k, v in PASSAGES.items()])
    _jsonl(root / "queries.jsonl", [{"_id": k, "text": v} for k, v in QUERIES.items()])
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in QRELS]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def beir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_beir(tmp_path_factory.mktemp("beir") / "tiny")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_distilbert` with a wider weight init (0.3 instead of 0.02).

    With the default init every CLS vector is almost the same: all dot products are
    31.9990 ± 0.0004 and several tie exactly in float32, below the 4e-6 by which ONNX and
    PyTorch differ, so rankings (hence metrics) would hang on rounding. This init spreads the
    scores over 9–25 with gaps ≥ 1e-3.
    """
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    path = tmp_path_factory.mktemp("eval-ckpt") / "tiny-distilbert-wide"
    torch.manual_seed(0)
    config = DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64, initializer_range=0.3)
    DistilBertModel(config).save_pretrained(path)
    shutil.copy(VOCAB, path / "vocab.txt")
    return path


@pytest.fixture(scope="module")
def artifact(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertdot.export.pipeline import ExportOptions, export_artifact

    out = tmp_path_factory.mktemp("eval-artifact") / "tiny-wide"
    options = ExportOptions(model=str(checkpoint), out=out, precisions=("fp32",))
    export_artifact(options, say=lambda _: None)
    return out


@pytest.fixture(scope="module")
def index_dir(artifact: Path, beir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from bertdot.server.encoding.encoder import Encoder
    from bertdot.server.indexing.build import build_index

    out = tmp_path_factory.mktemp("eval-index") / "index"
    encoder = Encoder(artifact, device="cpu", precision="fp32")
    build_index(encoder, beir / "corpus.jsonl", out, progress=False, say=lambda _: None)
    return out


@pytest.fixture(scope="module")
def candidates_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("runs") / "bm25.run"
    rows = [
        f"{qid} Q0 {doc} {rank} {10 - rank}.5 bm25"
        for qid, docs in CANDIDATES.items()
        for rank, doc in enumerate(docs, start=1)
    ]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def eval_main(*argv: object) -> int:
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--no-progress", *map(str, argv)])
    return int(args.handler(args))


# ------------------------------------------------------------ hand formulas ----


def ranked(docs: Mapping[str, float]) -> list[str]:
    """By score, ties by document id descending (trec_eval's rule)."""
    return [d for d, _ in sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)]


def hand_metrics(run: Mapping[str, Mapping[str, float]], t: int) -> dict[str, float]:
    """The card's metrics written out: RR and recall binarised at t, nDCG with linear gain."""
    labels: dict[str, dict[str, int]] = {}
    for q, d, s in QRELS:
        labels.setdefault(q, {})[d] = s
    sums = dict.fromkeys(("MRR@10", "nDCG@10", "Recall@100", "Recall@1000"), 0.0)
    for qid, grades in labels.items():
        order = ranked(run.get(qid, {}))
        rel = [grades.get(d, 0) for d in order]
        first = next((i for i, g in enumerate(rel[:10], start=1) if g >= t), None)
        sums["MRR@10"] += 1 / first if first else 0.0
        dcg = sum(g / math.log2(i + 1) for i, g in enumerate(rel[:10], start=1))
        ideal = sorted(grades.values(), reverse=True)[:10]
        sums["nDCG@10"] += dcg / sum(g / math.log2(i + 1) for i, g in enumerate(ideal, start=1))
        relevant = sum(1 for g in grades.values() if g >= t)
        for k in (100, 1000):
            sums[f"Recall@{k}"] += sum(1 for g in rel[:k] if g >= t) / relevant
    return {name: total / len(labels) for name, total in sums.items()}


def assert_metrics(
    found: Mapping[str, float], expected: Mapping[str, float], depth: int = 1000
) -> None:
    """The card's metrics, except Recall@N of a run cut shallower than N (not a recall)."""
    names = ["MRR@10", "nDCG@10", "Recall@100", "Recall@1000"]
    assert list(found) == [n for n in names if not n.startswith("Recall") or int(n[7:]) <= depth]
    for name in found:
        assert found[name] == pytest.approx(expected[name], abs=1e-9), name


def test_metrics_match_hand_values_on_a_fixed_run() -> None:
    """q1: relevant (≥2) at rank 2; q2 answers nothing relevant in the top 10; q3 is absent."""
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 2}, "q3": {"d": 1}}
    run = {"q1": {"b": 3.0, "a": 2.0, "x": 1.0}, "q2": {f"n{i}": 20.0 - i for i in range(11)}}
    run["q2"]["c"] = 0.0  # rank 12: outside the top 10, inside the top 100
    metrics = evaluate(qrels, run, rel_threshold=2)
    assert metrics["MRR@10"] == pytest.approx((1 / 2) / 3)
    ndcg_q1 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert metrics["nDCG@10"] == pytest.approx(ndcg_q1 / 3)
    # q3 has no label ≥ 2: its recall counts as 0 rather than being dropped from the mean.
    assert metrics["Recall@100"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(("k", "threshold"), [(1000, 2), (3, 1)])
def test_retrieval_in_process_matches_hand_metrics(
    k: int, threshold: int, beir: Path, index_dir: Path, artifact: Path, tmp_path: Path
) -> None:
    out, saved = tmp_path / "metrics.json", tmp_path / "run.trec"
    code = eval_main(
        "--dataset", beir, "--index", index_dir, "--model", artifact, "--device", "cpu",
        "--rel-threshold", str(threshold), "--k", str(k), "--json", out, "--save-run", saved,
    )  # fmt: skip
    assert code == 0
    run = read_run(saved)
    assert set(run) == {"q1", "q2", "q3"}  # the unjudged q9 is not evaluated
    assert all(len(docs) == min(k, len(PASSAGES)) for docs in run.values())
    assert_metrics(json.loads(out.read_text()), hand_metrics(run, t=threshold), depth=k)


def test_rerank_scores_candidates_by_dot_product(
    beir: Path, index_dir: Path, artifact: Path, candidates_file: Path, tmp_path: Path
) -> None:
    from bertdot.server.encoding.encoder import Encoder

    encoder = Encoder(artifact, device="cpu", precision="fp32")
    runs = {}
    for name, extra in {"text": [], "index": ["--index", index_dir]}.items():
        out, saved = tmp_path / f"{name}.json", tmp_path / f"{name}.trec"
        code = eval_main(
            "--dataset", beir, "--model", artifact, "--candidates", candidates_file,
            "--device", "cpu", "--json", out, "--save-run", saved, *extra,
        )  # fmt: skip
        assert code == 0
        runs[name] = read_run(saved)
        assert_metrics(json.loads(out.read_text()), hand_metrics(runs[name], t=1))
    for qid, docs in CANDIDATES.items():
        query = encoder.encode([QUERIES[qid]]).vectors[0]
        expected = encoder.encode([PASSAGES[d] for d in docs]).vectors @ query
        for name in runs:
            assert list(runs[name][qid]) == ranked(dict(zip(docs, expected, strict=True)))
            found = np.array([runs[name][qid][d] for d in docs])
            np.testing.assert_allclose(found, expected, rtol=1e-5, atol=1e-5)


def test_remote_matches_in_process(
    beir: Path, index_dir: Path, artifact: Path, candidates_file: Path, tmp_path: Path
) -> None:
    from bertdot.server.app.config import ServerConfig
    from tests.support.serving import serving

    config = ServerConfig(model=artifact, index=index_dir, port=0, device="cpu")
    local = ["--model", artifact, "--index", index_dir, "--device", "cpu"]
    with serving(config) as server:
        for mode in ([], ["--candidates", candidates_file]):
            results = []
            for where in (["--target", server.target], local):
                out = tmp_path / "m.json"
                assert eval_main("--dataset", beir, "--json", out, *where, *mode) == 0
                results.append(json.loads(out.read_text()))
            assert results[0] == pytest.approx(results[1], abs=1e-6)


def test_reference_difference_is_zero_in_fp32(
    beir: Path,
    index_dir: Path,
    artifact: Path,
    candidates_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    base = ["--dataset", beir, "--model", artifact, "--device", "cpu", "--precision", "fp32"]
    for mode in (["--index", index_dir], ["--candidates", candidates_file]):
        out = tmp_path / "ref.json"
        assert eval_main(*base, *mode, "--reference", "--json", out) == 0
        report = json.loads(out.read_text())
        names = {"MRR@10", "nDCG@10", "Recall@100", "Recall@1000"}
        assert set(report["reference"]) == set(report["delta"]) == names
        assert all(abs(v) < 1e-6 for v in report["delta"].values())
        table = capsys.readouterr().out
        assert "reference" in table and "Δ" in table


# --------------------------------------------------------------- bad files ----


def _broken(root: Path, name: str, text: str) -> Path:
    _write_beir(root)
    (root / name).write_text(text, encoding="utf-8")
    return root / name


BAD_DATASETS = {
    "malformed JSON": ("queries.jsonl", '{"_id": "q1", "text": "a"}\n{"_id": "q2", \n', 2),
    "no header": ("qrels/test.tsv", "q1\td1\t1\n", 1),
    "unknown query": ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq7\td2\t1\n", 3),
    "bad score": ("qrels/test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\thigh\n", 2),
}


@pytest.mark.parametrize("case", list(BAD_DATASETS))
def test_bad_dataset_files_name_file_and_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name, text, line = BAD_DATASETS[case]
    path = _broken(tmp_path / "ds", name, text)
    with pytest.raises(DatasetError) as caught:
        load_dataset(str(tmp_path / "ds"))
    assert (caught.value.path, caught.value.line) == (str(path), line)
    assert eval_main("--dataset", tmp_path / "ds", "--target", "127.0.0.1:1") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{path}:{line}:" in err


def test_run_file_with_wrong_column_count(
    beir: Path, artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "bad.run"
    run.write_text("q1 Q0 d1 1 2.0 bm25\nq1 Q0 d2 2 1.0\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"bad\.run:2: expected 6 columns"):
        read_run(run)
    code = eval_main("--dataset", beir, "--model", artifact, "--candidates", run)
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run}:2:" in err


def test_split_choice(tmp_path: Path) -> None:
    root = _write_beir(tmp_path / "ds")
    dev = "query-id\tcorpus-id\tscore\nq9\td8\t1\n"
    (root / "qrels" / "dev.tsv").write_text(dev, encoding="utf-8")
    assert set(load_dataset(str(root)).queries) == {"q1", "q2", "q3"}  # test by default
    assert set(load_dataset(str(root), "dev").queries) == {"q9"}
    with pytest.raises(DatasetError, match=r"no train\.tsv"):
        load_dataset(str(root), "train")
    with pytest.raises(DatasetError, match="no such folder"):
        load_dataset(str(tmp_path / "missing"))


class _FakeIrds:
    """Just the part of the ir_datasets API the adapter uses (no download)."""

    def __init__(self) -> None:
        Q = namedtuple("Q", "query_id text")
        D = namedtuple("D", "doc_id text")
        R = namedtuple("R", "query_id doc_id relevance iteration")
        S = namedtuple("S", "query_id doc_id score")
        self.queries = [Q(q, t) for q, t in QUERIES.items()]
        self.docs = {d: D(d, t) for d, t in PASSAGES.items()}
        self.qrels = [R(q, d, s, "0") for q, d, s in QRELS]
        self.scored = [S(q, d, 0.0) for q, docs in CANDIDATES.items() for d in docs]
        self.scored.append(S("q9", "d1", 0.0))  # an unjudged query: not a candidate

    def load(self, dataset_id: str) -> _FakeIrds:
        if dataset_id != "fake/dev":
            raise KeyError(dataset_id)
        return self

    def has_queries(self) -> bool:
        return True

    has_qrels = has_docs = has_scoreddocs = has_queries

    def queries_iter(self) -> Iterator[Any]:
        return iter(self.queries)

    def qrels_iter(self) -> Iterator[Any]:
        return iter(self.qrels)

    def scoreddocs_iter(self) -> Iterator[Any]:
        return iter(self.scored)

    def docs_iter(self) -> Iterator[Any]:
        return iter(self.docs.values())

    def docs_store(self) -> Any:
        return SimpleNamespace(
            get_many=lambda ids: {i: self.docs[i] for i in ids if i in self.docs}
        )


def test_ir_datasets_ids_and_their_scoreddocs(
    monkeypatch: pytest.MonkeyPatch, artifact: Path, candidates_file: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", _FakeIrds())
    dataset = load_dataset("fake/dev")
    assert set(dataset.queries) == {"q1", "q2", "q3"}
    assert dataset.corpus is not None and dataset.scoreddocs is not None
    assert set(dataset.scoreddocs()) == {"q1", "q2", "q3"}
    assert dataset.corpus.texts({"d2", "zz"}) == {"d2": PASSAGES["d2"]}
    with pytest.raises(DatasetError, match="nor a known ir_datasets id"):
        load_dataset("fake/test")
    metrics = []
    for candidates in ("scoreddocs", candidates_file):
        out = tmp_path / "m.json"
        args = ("--dataset", "fake/dev", "--model", artifact, "--candidates", candidates)
        assert eval_main(*args, "--device", "cpu", "--json", out) == 0
        metrics.append(json.loads(out.read_text()))
    assert metrics[0] == pytest.approx(metrics[1])  # the same candidates, however given


def test_ir_datasets_missing_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ir_datasets", None)  # import fails
    with pytest.raises(DatasetError, match="pip install ir_datasets"):
        load_dataset("msmarco-passage/dev/small")
