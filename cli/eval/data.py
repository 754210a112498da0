"""Evaluation data: BEIR folders (queries, qrels, corpus) and TREC run files.

A BEIR folder holds `queries.jsonl` (`_id`, `text`), `corpus.jsonl` (`_id`, `title`,
`text`; needed only to re-rank by text or for `--reference`) and either `qrels/<split>.tsv`
or `qrels.tsv`, tab-separated with the header `query-id corpus-id score`. Only the queries
that the qrels judge are evaluated: BEIR's `queries.jsonl` holds every split's queries.

Every problem is a `DatasetError` naming the file and line: a metric computed over a silently
half-read file would look like a model regression.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable, Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bertdot.server.index.corpus import CorpusError, Record, open_binary, read_corpus

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]
QRELS_HEADER = ("query-id", "corpus-id", "score")
RUN_COLUMNS = "qid Q0 docid rank score tag"


class DatasetError(ValueError):
    """A dataset or run file is missing or malformed; the message names the file and line."""

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


class Corpus(Protocol):
    """The passages of a dataset, for re-ranking by text and for the PyTorch reference."""

    def passages(self) -> Iterator[tuple[str, str]]:
        """(id, encoder input) of every passage, in corpus order."""

    def texts(self, ids: set[str]) -> dict[str, str]:
        """Encoder input of each of `ids` found in the corpus."""


@dataclass(frozen=True)
class Dataset:
    name: str
    queries: dict[str, str]  # the judged queries only, in file order
    qrels: Qrels
    corpus: Corpus | None
    scoreddocs: Callable[[], Run] | None = None  # a candidate run shipped with the dataset


@dataclass(frozen=True)
class JsonlCorpus:
    path: Path

    def passages(self) -> Iterator[tuple[str, str]]:
        for record in self._records():
            yield record.passage.id, record.passage.encoder_input()

    def texts(self, ids: set[str]) -> dict[str, str]:
        return {pid: text for pid, text in self.passages() if pid in ids}

    def _records(self) -> Iterator[Record]:
        try:
            yield from read_corpus(self.path, "jsonl")
        except CorpusError as exc:
            raise DatasetError(exc.path, exc.line, exc.problem) from exc


def load_beir(root: Path, split: str | None = None) -> Dataset:
    queries_path = _find(root, "queries.jsonl", required=True)
    assert queries_path is not None
    corpus_path = _find(root, "corpus.jsonl", required=False)
    all_queries = read_queries(queries_path)
    qrels = read_qrels(choose_qrels(root, split), known=all_queries)
    queries = {qid: text for qid, text in all_queries.items() if qid in qrels}
    corpus = JsonlCorpus(corpus_path) if corpus_path else None
    return Dataset(root.name, queries, qrels, corpus)


def _find(root: Path, name: str, required: bool) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    if required:
        raise DatasetError(root, None, f"{name} not found (expected a BEIR folder)")
    return None


def choose_qrels(root: Path, split: str | None) -> Path:
    """`qrels/<split>.tsv`; without --split, `test`, the only file there, or `qrels.tsv`."""
    folder = root / "qrels"
    if folder.is_dir():
        files = {p.stem: p for p in sorted(folder.glob("*.tsv"))}
        if split is not None:
            if split not in files:
                found = ", ".join(files) or "none"
                raise DatasetError(folder, None, f"no {split}.tsv (splits found: {found})")
            return files[split]
        if "test" in files:
            return files["test"]
        if len(files) == 1:
            return next(iter(files.values()))
        if files:
            raise DatasetError(folder, None, f"splits {', '.join(files)}: choose one with --split")
    if split is None and (root / "qrels.tsv").is_file():
        return root / "qrels.tsv"
    raise DatasetError(root, None, "no qrels/<split>.tsv and no qrels.tsv")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based number, text) of every non-blank line, plain or gzip."""
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").removeprefix("\ufeff").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                raise DatasetError(path, number, f"invalid UTF-8 at byte {exc.start}") from exc
            if line.strip():
                yield number, line


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    for number, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(path, number, f"malformed JSON: {exc.msg}") from exc
        qid = obj.get("_id") if isinstance(obj, dict) else None
        text = obj.get("text") if isinstance(obj, dict) else None
        if isinstance(qid, bool) or not isinstance(qid, (str, int)) or not isinstance(text, str):
            raise DatasetError(path, number, "expected an object with '_id' and 'text'")
        if str(qid) in queries:
            raise DatasetError(path, number, f"duplicate query id {qid!r}")
        queries[str(qid)] = text
    return queries


def _columns(line: str) -> list[str]:
    return line.split("\t") if "\t" in line else line.split()


def read_qrels(path: Path, known: Container[str] | None = None) -> Qrels:
    """BEIR qrels; `known` (the query ids) turns a judgement of an unknown query into an error."""
    qrels: Qrels = {}
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise DatasetError(path, None, "empty qrels file")
    if tuple(c.strip().lower() for c in _columns(first[1])) != QRELS_HEADER:
        hint = (
            " (a TREC qrels file? convert it to BEIR's 3 columns)"
            if len(_columns(first[1])) == 4
            else ""
        )
        raise DatasetError(path, first[0], f"expected the header {' '.join(QRELS_HEADER)}{hint}")
    for number, line in lines:
        columns = _columns(line)
        if len(columns) != 3:
            raise DatasetError(path, number, f"expected 3 columns, found {len(columns)}")
        qid, doc_id, score = columns
        try:
            relevance = int(score)
        except ValueError:
            raise DatasetError(path, number, f"score {score!r} is not an integer") from None
        if known is not None and qid not in known:
            raise DatasetError(path, number, f"query {qid!r} is not in the queries file")
        qrels.setdefault(qid, {})[doc_id] = relevance
    if not qrels:
        raise DatasetError(path, None, "no judgements after the header")
    return qrels


def read_run(path: str | Path) -> Run:
    """A TREC run (`qid Q0 docid rank score tag`); ranks are ignored, scores order the run."""
    run: Run = {}
    for number, line in _lines(Path(path)):
        columns = line.split()
        if len(columns) != 6:
            raise DatasetError(
                path, number, f"expected 6 columns ({RUN_COLUMNS}), found {len(columns)}"
            )
        qid, _, doc_id, _, score, _ = columns
        try:
            value = float(score)
        except ValueError:
            raise DatasetError(path, number, f"score {score!r} is not a number") from None
        docs = run.setdefault(qid, {})
        if doc_id in docs:
            raise DatasetError(path, number, f"document {doc_id!r} listed twice for {qid!r}")
        docs[doc_id] = value
    if not run:
        raise DatasetError(path, None, "empty run file")
    return run


def write_run(run: Run, path: str | Path, tag: str = "bertdot") -> None:
    """Scores in full precision, so that reading the file back ranks exactly as evaluated."""
    with open(path, "w", encoding="utf-8") as handle:
        for qid, docs in run.items():
            # trec_eval's order: score descending, ties by document id descending.
            ranked = sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)
            for rank, (doc_id, score) in enumerate(ranked, start=1):
                handle.write(f"{qid} Q0 {doc_id} {rank} {score!r} {tag}\n")


def top_candidates(run: Run, depth: int) -> dict[str, list[str]]:
    """Each query's `depth` best-scored documents: the candidates a re-ranker rescores."""
    return {
        qid: [d for d, _ in heapq.nlargest(depth, docs.items(), key=lambda item: item[1])]
        for qid, docs in run.items()
    }
