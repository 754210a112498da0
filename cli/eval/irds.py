"""`ir_datasets` ids (e.g. `msmarco-passage/dev/small`) as evaluation datasets.

`ir_datasets` is optional and imported only here: it downloads (and caches) the official
files on first use, which is what reproducing the model card on MS MARCO needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bertdot.cli.eval.data import Dataset, DatasetError, Qrels, Run

INSTALL_HINT = "ir_datasets ids need the ir_datasets package: pip install ir_datasets"


def _text(item: Any) -> str:
    """The text a retriever reads (title and body where a dataset has both)."""
    if hasattr(item, "default_text"):
        return str(item.default_text())
    return str(item.text)


@dataclass(frozen=True)
class IrdsCorpus:
    dataset: Any

    def passages(self) -> Iterator[tuple[str, str]]:
        for doc in self.dataset.docs_iter():
            yield doc.doc_id, _text(doc)

    def texts(self, ids: set[str]) -> dict[str, str]:
        found = self.dataset.docs_store().get_many(sorted(ids))
        return {doc_id: _text(doc) for doc_id, doc in found.items()}


def load_ir_dataset(dataset_id: str) -> Dataset:
    try:
        import ir_datasets
    except ImportError:
        raise DatasetError(dataset_id, None, INSTALL_HINT) from None
    try:
        dataset = ir_datasets.load(dataset_id)
    except KeyError:
        raise DatasetError(dataset_id, None, "no such folder, nor a known ir_datasets id") from None
    if not (dataset.has_queries() and dataset.has_qrels()):
        raise DatasetError(dataset_id, None, "this ir_datasets id has no queries or no qrels")
    try:  # downloads on first use: network and checksum failures surface here
        qrels: Qrels = {}
        for qrel in dataset.qrels_iter():
            qrels.setdefault(qrel.query_id, {})[qrel.doc_id] = int(qrel.relevance)
        queries = {q.query_id: _text(q) for q in dataset.queries_iter() if q.query_id in qrels}
    except Exception as exc:  # ir_datasets raises many kinds; the user needs one line
        raise DatasetError(dataset_id, None, f"ir_datasets could not load it: {exc}") from exc
    missing = sorted(set(qrels) - set(queries))
    if missing:
        raise DatasetError(dataset_id, None, f"qrels judge queries it lacks: {missing[:5]}")
    corpus = IrdsCorpus(dataset) if dataset.has_docs() else None
    judged = set(queries)
    scored = (lambda: _scoreddocs(dataset, judged)) if dataset.has_scoreddocs() else None
    return Dataset(dataset_id, queries, qrels, corpus, scored)


def _scoreddocs(dataset: Any, judged: set[str]) -> Run:
    """The candidate run the dataset ships (BM25 top-1000 for the MS MARCO passage sets), for
    the judged queries only. MS MARCO's own files carry no scores (all 0): file order stands."""
    run: Run = {}
    for item in dataset.scoreddocs_iter():
        if item.query_id in judged:
            run.setdefault(item.query_id, {})[item.doc_id] = float(item.score)
    return run
