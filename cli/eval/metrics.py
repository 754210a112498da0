"""The model card's metrics, computed by ir-measures (pytrec_eval underneath).

MRR@10 and Recall binarise graded labels at `rel_threshold` (TREC-DL uses 2: "highly" and
"perfectly" relevant); nDCG@10 keeps the graded labels, with trec_eval's linear gain.

Every judged query counts, with 0 where the run has nothing for it: trec_eval and
pytrec_eval by default average only over the queries a run answers, which would reward a
system for failing on the hard queries.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bertdot.cli.eval.data import Qrels, Run

METRIC_NAMES = ("MRR@10", "nDCG@10", "Recall@100", "Recall@1000")
INSTALL_HINT = "evaluation needs ir-measures: pip install 'bertdot[eval]'"


def card_measures(rel_threshold: int = 1) -> dict[str, Any]:
    """ir-measures objects by the name the model card reports them under."""
    try:
        from ir_measures import RR, R, nDCG
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    return {
        "MRR@10": RR(rel=rel_threshold) @ 10,
        "nDCG@10": nDCG @ 10,
        "Recall@100": R(rel=rel_threshold) @ 100,
        "Recall@1000": R(rel=rel_threshold) @ 1000,
    }


def evaluate(
    qrels: Qrels, run: Run, rel_threshold: int = 1, depth: int | None = None
) -> dict[str, float]:
    """Mean of each metric over every query of `qrels` (queries absent from `run` score 0).

    `depth`: how many passages the run was allowed per query. Recall@N of a run cut at fewer
    than N is not Recall@N (it would read as a poor model), so such metrics are left out.
    """
    import ir_measures

    if not qrels:
        raise ValueError("no judged queries to evaluate")
    measures = {
        name: measure
        for name, measure in card_measures(rel_threshold).items()
        if depth is None or not name.startswith("Recall@") or int(name.split("@")[1]) <= depth
    }
    by_measure = {str(m): name for name, m in measures.items()}
    totals = dict.fromkeys(measures, 0.0)
    judged_run = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    if judged_run:
        for metric in ir_measures.iter_calc(list(measures.values()), qrels, judged_run):
            totals[by_measure[str(metric.measure)]] += float(metric.value)
    return {name: total / len(qrels) for name, total in totals.items()}


def delta(ours: Mapping[str, float], reference: Mapping[str, float]) -> dict[str, float]:
    """ours − reference, per metric."""
    return {name: ours[name] - reference[name] for name in ours}


def table(ours: Mapping[str, float], reference: Mapping[str, float] | None = None) -> str:
    """A plain-text table: one row per metric; reference and Δ columns when given."""
    header = f"{'metric':<12} {'bertdot':>8}"
    if reference is not None:
        header += f" {'reference':>9} {'Δ':>8}"
    rows = [header]
    for name, value in ours.items():
        row = f"{name:<12} {value:>8.4f}"
        if reference is not None:
            row += f" {reference[name]:>9.4f} {value - reference[name]:>+8.4f}"
        rows.append(row)
    return "\n".join(rows)
