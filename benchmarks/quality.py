"""What each precision and index setting costs in retrieval quality, measured end to end.

    python benchmarks/quality.py                 # ~300 known-item queries over Python's docs
    python benchmarks/quality.py --queries 100   # a quicker, noisier run

No labelled dataset can be downloaded here, so the benchmark labels one itself from the
built-in corpus (Python's own documentation, ~4,000 passages): each query names a documented
object or a language-reference topic in words ("what does json dumps do in python") and every
passage of that object is relevant. Titles stay in the indexed text and they hold the names,
so this is a navigational, known-item test: it measures how much the serving stack (ONNX
export, int8, HNSW) changes rankings, not how good the model is.

Every setting runs through the real CLI (`bertdot index build`, `bertdot eval`, `bertdot index
check`) on the real all-MiniLM-L6-v2; the PyTorch fp32 exact ranking comes from `bertdot eval
--reference`. Writes `quality-minilm.json` and `quality-minilm.md` under `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_info, markdown_table, row_cosines, write_report
from encoder import DEFAULT_CACHE, prepare

PACKAGES = (
    "onnxruntime-gpu",
    "onnxruntime",
    "torch",
    "transformers",
    "hnswlib",
    "ir-measures",
    "numpy",
)
SEED = 0
TOPIC_SHARE = 0.1  # of the queries: the language reference has only ~60 usable topics
DOC_TEMPLATES = ("how do I use {} in python", "what does {} do in python", "python {}")
TOPIC_TEMPLATES = ("python {} statement", "python {} syntax", "how does {} work in python")
# pydoc topic names that are internal labels rather than words a user would type.
CRYPTIC_TOPICS = frozenset(
    {"augassign", "execmodel", "exprlists", "formatstrings", "id-classes", "in", "specialattrs",
     "specialnames", "typesfunctions", "typesmapping", "typesmethods", "typesmodules",
     "typesseq", "typesseq-mutable"}
)  # fmt: skip
MIN_NAME_CHARS = 3  # the object's own name: "re" or "io" alone says too little
CHECK_EFS = (16, 32, 64, 128, 256, 512)
REPO = Path(__file__).resolve().parents[1]


# --- dataset --------------------------------------------------------------------------------


def _group(passage_id: str) -> tuple[str, str]:
    """`doc-json.dumps-0` → ("doc", "json.dumps"); `topic-atom-literals-2` → ("topic", …)."""
    kind, rest = passage_id.split("-", 1)
    return kind, rest.rsplit("-", 1)[0]


def _words(kind: str, name: str) -> str:
    return " ".join(part for part in re.split(r"[._\-]+", name) if part)


def _usable(kind: str, name: str, texts: list[str], duplicated: set[str]) -> bool:
    """Skip cryptic topic labels, names too short to mean anything, and objects whose
    docstring another object shares word for word (turtle's functions and methods): a
    query for one would have an equally right answer that is judged wrong."""
    if kind == "topic":
        return name not in CRYPTIC_TOPICS and not name.startswith("bltin-")
    if len(name.rsplit(".", 1)[-1]) < MIN_NAME_CHARS:
        return False
    return not any(text in duplicated for text in texts)


def build_dataset(root: Path, queries: int, seed: int = SEED) -> dict[str, Any]:
    """Write a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv); returns its facts."""
    from bertdot.server.indexing.builtin_corpus import passages

    records = list(passages())
    groups: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    for record in records:
        groups[_group(record["_id"])].append(record)
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        counts[record["text"]] += 1
    duplicated = {text for text, n in counts.items() if n > 1}
    usable = {
        key: members
        for key, members in groups.items()
        if _usable(*key, [m["text"] for m in members], duplicated)
    }
    words = {key: _words(*key) for key in usable}
    clashing = {w for w, n in _count(words.values()).items() if n > 1}
    keys = sorted(key for key in usable if words[key] not in clashing)
    rng = random.Random(seed)
    topics = [key for key in keys if key[0] == "topic"]
    docs = [key for key in keys if key[0] == "doc"]
    n_topics = min(len(topics), round(queries * TOPIC_SHARE))
    chosen = rng.sample(topics, n_topics) + rng.sample(docs, min(len(docs), queries - n_topics))
    asked = []
    for number, key in enumerate(chosen):
        templates = TOPIC_TEMPLATES if key[0] == "topic" else DOC_TEMPLATES
        asked.append((f"q{number:04d}", rng.choice(templates).format(words[key]), key))

    root.mkdir(parents=True, exist_ok=True)
    _write_lines(root / "corpus.jsonl", (json.dumps(r, ensure_ascii=False) for r in records))
    _write_lines(root / "queries.jsonl", (json.dumps({"_id": q, "text": t}) for q, t, _ in asked))
    (root / "qrels").mkdir(exist_ok=True)
    qrels = ["query-id\tcorpus-id\tscore"]
    qrels += [f"{qid}\t{m['_id']}\t1" for qid, _, key in asked for m in usable[key]]
    _write_lines(root / "qrels" / "test.tsv", qrels)
    relevant = [len(usable[key]) for _, _, key in asked]
    return {
        "dir": str(root),
        "passages": len(records),
        "corpus_sha256": hashlib.sha256((root / "corpus.jsonl").read_bytes()).hexdigest()[:16],
        "queries": len(asked),
        "topic_queries": n_topics,
        "objects_usable": len(keys),
        "objects_total": len(groups),
        "relevant_per_query": {"mean": round(float(np.mean(relevant)), 2), "max": max(relevant)},
        "seed": seed,
        "examples": [text for _, text, _ in asked[:: max(1, len(asked) // 8)]],
        "texts": [text for _, text, _ in asked],
    }


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for value in values:
        counts[value] += 1
    return counts


def _write_lines(path: Path, lines: Any) -> None:
    """Atomically, and only when the content changed (keeps the cached index's key stable)."""
    text = "".join(f"{line}\n" for line in lines)
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


# --- the CLI --------------------------------------------------------------------------------


def _bertdot() -> str:
    beside = Path(sys.executable).parent / "bertdot"
    return str(beside) if beside.is_file() else "bertdot"


def shown(args: Sequence[str]) -> str:
    """The command as a reader would type it: `bertdot …`, paths under ~."""
    text = shlex.join(["bertdot", *args[1:]]).replace(f"{REPO}/", "")
    return text.replace(str(Path.home()), "~")


def bertdot(*args: str) -> tuple[str, float]:
    """Run one `bertdot` command, echo its output; returns (command as shown, seconds)."""
    command = [_bertdot(), *args]
    print(f"$ {shown(command)}", flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.stdout.strip():
        print("  " + done.stdout.strip().replace("\n", "\n  "), flush=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise RuntimeError(f"exit status {done.returncode}: {shown(command)}")
    return shown(command), round(elapsed, 1)


def calibrated_export(checkpoint: Path, corpus: Path, out: Path) -> str:
    """`bertdot export` with int8 calibrated on `corpus`, unless cached; returns the command."""
    args = ["export", str(checkpoint), "--out", str(out), "--precisions", "fp32,fp16,int8",
            "--calibration", str(corpus), "--force"]  # fmt: skip
    if not (out / "manifest.json").is_file():
        bertdot(*args)
    return shown([_bertdot(), *args])


def build_index(artifact: Path, corpus: Path, out: Path, precision: str) -> str:
    """Build the index into `out` unless it is cached there; returns the build command."""
    from bertdot.server.index.manifest import IndexLoadError, IndexManifest

    def args(target: Path) -> list[str]:
        return [
            "index", "build", "--model", str(artifact), "--corpus", str(corpus),
            "--out", str(target), "--precision", precision, "--device", "cpu", "--no-progress",
        ]  # fmt: skip

    try:
        IndexManifest.read(out)
        print(f"index {precision}: cached at {out}", flush=True)
    except (IndexLoadError, OSError, ValueError, KeyError):
        partial = out.with_name(out.name + ".partial")  # a half-built index never looks done
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
        bertdot(*args(partial))
        partial.rename(out)
    return shown([_bertdot(), *args(out)])


@dataclass(frozen=True)
class Setting:
    label: str
    precision: str
    ef: int | None  # None: the index's default
    exact: bool = False

    def depth(self, default_ef: int, passages: int) -> tuple[int, int]:
        """(k, effective ef). eval searches with ef = max(ef, k), so Recall@100 exists only
        where ef ≥ 100; below that k = 10 keeps the asked ef (and MRR@10, nDCG@10 need no
        more). Exact: ef ≥ the passage count, where hnswlib's beam never fills and every
        reachable node is scored."""
        if self.exact:
            return 1000, max(passages, 1000)
        ef = self.ef or default_ef
        return (100 if ef >= 100 else 10), ef


def run_eval(
    setting: Setting, data: Path, artifact: Path, index: Path, k: int, ef: int, work: Path,
    reference: Path | None,
) -> dict[str, Any]:  # fmt: skip
    stem = f"{setting.precision}-ef{ef}-k{k}"
    args = [
        "eval", "--dataset", str(data), "--model", str(artifact), "--index", str(index),
        "--precision", setting.precision, "--device", "cpu", "--k", str(k), "--ef", str(ef),
        "--json", str(work / f"{stem}.json"), "--save-run", str(work / f"{stem}.run"),
        "--no-progress",
    ]  # fmt: skip
    if reference is not None:
        args += ["--reference", "--reference-model", str(reference), "--reference-device", "cpu"]
    command, seconds = bertdot(*args)
    metrics = json.loads((work / f"{stem}.json").read_text(encoding="utf-8"))
    return {"metrics": metrics, "run": work / f"{stem}.run", "command": command, "wall_s": seconds}


def ranked10(run_file: Path) -> dict[str, list[str]]:
    """Each query's top 10 from a TREC run, best first."""
    ranked: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for line in run_file.read_text(encoding="utf-8").splitlines():
        qid, _, doc, _, score, *_ = line.split()
        ranked[qid].append((float(score), doc))
    return {
        qid: [doc for _, doc in sorted(hits, reverse=True)[:10]] for qid, hits in ranked.items()
    }


def read_qrels(path: Path) -> dict[str, set[str]]:
    relevant: dict[str, set[str]] = defaultdict(set)
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc, score = line.split("\t")
        if int(score) > 0:
            relevant[qid].add(doc)
    return relevant


def rr_changes(
    run: dict[str, list[str]], base: dict[str, list[str]], qrels: dict[str, set[str]]
) -> dict[str, int]:
    """How many queries rank their first relevant passage higher or lower than in `base`:
    whether a small difference in MRR@10 is a few queries or many."""

    def rr(top: list[str], relevant: set[str]) -> float:
        return next((1.0 / (n + 1) for n, doc in enumerate(top) if doc in relevant), 0.0)

    changes = {"better": 0, "worse": 0, "same": 0}
    for qid, relevant in qrels.items():
        ours, theirs = rr(run.get(qid, []), relevant), rr(base.get(qid, []), relevant)
        changes["better" if ours > theirs else "worse" if ours < theirs else "same"] += 1
    return changes


def overlap(run: dict[str, list[str]], exact: dict[str, list[str]]) -> float:
    return float(
        np.mean([len(set(run.get(q, [])) & set(d)) / max(len(d), 1) for q, d in exact.items()])
    )


# --- embeddings -----------------------------------------------------------------------------


def cosines(
    artifact: Path, checkpoint: Path, queries: list[str], passages: list[str]
) -> dict[str, Any]:
    """Cosine of each ORT precision's vectors against PyTorch fp32 (the eval reference's own
    encoder), on the query texts and on sampled passages (title + text, as indexed)."""
    from bertdot.export.reference import ModelSpec, ReferenceEncoder
    from bertdot.server.encoding.encoder import Encoder

    out: dict[str, Any] = {"queries": len(queries), "passages": len(passages)}
    encoders = {p: Encoder(artifact, device="cpu", precision=p) for p in ("fp32", "fp16", "int8")}
    m = encoders["fp32"].manifest
    torch_encoder = ReferenceEncoder.load(
        ModelSpec(str(checkpoint), m.pooling, m.similarity, m.max_length), str(checkpoint), "cpu"
    )
    for kind, texts in (("queries", queries), ("passages", passages)):
        reference = torch_encoder.encode(texts)
        for precision, encoder in encoders.items():
            cos = row_cosines(encoder.encode(texts).vectors, reference)
            out.setdefault(precision, {})[kind] = {
                "min": round(float(cos.min()), 6),
                "p1": round(float(np.percentile(cos, 1)), 6),
                "median": round(float(np.median(cos)), 6),
            }
    return out


# --- report ---------------------------------------------------------------------------------

METRICS = ("MRR@10", "nDCG@10", "Recall@100", "Recall@1000")


def _f(value: float | None, digits: int = 4, sign: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def render_markdown(data: dict[str, Any]) -> str:
    ds, machine = data["dataset"], data["machine"]
    lines = [
        "# Retrieval quality: what each precision and index setting costs",
        "",
        f"Model: {data['model']['description']} Dataset: {ds['queries']} known-item queries "
        f"({ds['topic_queries']} about language-reference topics, the rest about documented "
        f"standard-library objects) over the built-in corpus of {ds['passages']:,} passages of "
        f"Python {machine['python']}'s documentation; {ds['relevant_per_query']['mean']} "
        "relevant passages per query on average (every passage of the named object).",
        "",
        '**This is a navigational test.** Passage titles ("Python standard library: '
        'json.dumps") are indexed with the text, as users index them, and hold the very '
        "names the queries ask about, so absolute scores are high and say little about the "
        "model. What the table measures is how much the serving stack (ONNX export, int8, "
        "HNSW) moves rankings away from the PyTorch fp32 exact ranking.",
        "",
        markdown_table(
            [
                "setting",
                "k / search ef",
                "MRR@10",
                "nDCG@10",
                "R@100",
                "Δ MRR@10",
                "Δ nDCG@10",
                "recall@10 vs exact",
                "top-10 overlap vs ORT fp32 exact",
            ],
            [
                [
                    row["label"],
                    row["depth"],
                    _f(row["metrics"]["MRR@10"]),
                    _f(row["metrics"]["nDCG@10"]),
                    _f(row["metrics"].get("Recall@100")),
                    _f(row["delta"].get("MRR@10"), sign=True),
                    _f(row["delta"].get("nDCG@10"), sign=True),
                    _f(row.get("recall_at_10_vs_exact"), 3),
                    _f(row.get("top10_overlap_vs_fp32_exact"), 3),
                ]
                for row in data["rows"]
            ],
        ),
        "",
        "- Δ = setting − PyTorch fp32 exact (`bertdot eval --reference`, transformers fp32, "
        "brute force), on the same queries and judgements.",
        '- `bertdot eval` has no brute-force mode. "Exact" rows search HNSW with ef '
        f"{data['exact_ef']:,} ≥ the passage count: hnswlib's beam never fills, so every "
        "reachable node is scored; `bertdot index check` confirms recall@10 = "
        f"{_f(data['index_check']['fp32']['recall@10'].get(str(data['exact_ef'])), 3)} "
        "against numpy brute force at that ef.",
        "- eval searches with ef = max(ef, k), so ef 16 and 64 run at k = 10 (MRR@10 and "
        "nDCG@10 need no more) and have no R@100; R@100 at the default ef runs at k = 100.",
        "- recall@10 vs exact: `bertdot index check --queries` on these query texts, against "
        "brute force over the same index's vectors (ties count as hits): the HNSW loss alone. "
        "Top-10 overlap: the setting's top 10 against the ORT fp32 exact run's top 10, from "
        "the saved runs: int8 rows show how much quantization alone reorders the head.",
        "- Per query, the first relevant passage's rank against the ORT fp32 exact run: "
        + (
            "; ".join(
                f"{row['label']}: {c['better']} queries higher, {c['worse']} lower"
                for row in data["rows"][2:]
                if (c := row["rr_changes_vs_fp32_exact"])["better"] + c["worse"]
            )
            or "no query moved"
        )
        + ".",
        "",
        "## HNSW recall@10 against exact search, per ef (`bertdot index check`)",
        "",
    ]
    checks = data["index_check"]
    efs = list(checks["fp32"]["recall@10"])
    lines.append(
        markdown_table(
            ["index", *(f"ef {ef}" for ef in efs)],
            [
                [
                    f"{precision} recall@10 / p50 ms",
                    *(f"{check['recall@10'][ef]:.3f} / {check['p50_ms'][ef]:.2f}" for ef in efs),
                ]
                for precision, check in checks.items()
            ],
        )
    )
    lines += [
        "",
        f"Recommended ef (smallest with recall ≥ {checks['fp32']['target_recall']}): "
        + ", ".join(f"{p} {c['recommended_ef']}" for p, c in checks.items())
        + f"; the indexes' default ef is {data['default_ef']}.",
        "",
        "## Embeddings: cosine against PyTorch fp32",
        "",
    ]
    cos = data["cosine"]
    lines.append(
        markdown_table(
            ["ORT precision", "queries min / p1 / median", "passages min / p1 / median"],
            [
                [
                    precision
                    + (" (a GPU file, run here on the CPU)" if precision == "fp16" else ""),
                    *(
                        f"{c[kind]['min']:.6f} / {c[kind]['p1']:.6f} / {c[kind]['median']:.6f}"
                        for kind in ("queries", "passages")
                    ),
                ]
                for precision, c in cos.items()
                if isinstance(c, dict)
            ],
        )
    )
    lines += [
        "",
        f"On the {cos['queries']} query texts and {cos['passages']} sampled passages (title + "
        "text, as indexed); the reference is `bertdot eval --reference`'s own PyTorch encoder.",
        "",
        "## The int8 quality gate (`bertdot export`, recorded in the manifest)",
        "",
    ]
    gate_rows = []
    for label, by_precision in data.get("int8_gates", {}).items():
        gate = by_precision.get("int8")
        if gate:
            gate_rows.append([label, f"{gate['min_cosine']:.4f}", f"{gate['median_cosine']:.4f}",
                              gate["texts"], "passed: served by default on a CPU"
                              if gate["passed"] else f"failed (< {gate['required']}): fp32 "
                              "by default"])  # fmt: skip
    lines.append(markdown_table(["int8 calibration", "min cosine", "median cosine",
                                 "held-out + probe texts", "gate"], gate_rows))  # fmt: skip
    lines += [
        "",
        "Min cosine to PyTorch fp32 over the 8 probe texts and the half of the calibration "
        "texts that calibration never saw; the gate asks for ≥ 0.995.",
        "",
        "## Dataset",
        "",
        f"BEIR folder `{ds['dir'].replace(str(Path.home()), '~')}` (corpus sha256 "
        f"{ds['corpus_sha256']}…, seed {ds['seed']}). Queries name an object in words, "
        "from a few templates chosen by the seed: "
        + "; ".join(f"“{q}”" for q in ds["examples"])
        + f". {ds['objects_usable']:,} of {ds['objects_total']:,} objects and topics are "
        "usable: cryptic topic labels (typesseq, execmodel, bltin-…), names of under "
        f"{MIN_NAME_CHARS} characters, objects sharing a docstring word for word with "
        "another (turtle's functions and methods), and names that read the same in words "
        "are skipped.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "python benchmarks/quality.py" + data["settings"]["argv"],
        "# which runs:",
        *data["commands"],
        "```",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + f". Whole run {data['wall_s']:.0f} s. Quality numbers do not depend on load; the "
        "p50 latencies of `index check` do.",
    ]
    return "\n".join(lines) + "\n"


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="artifacts, dataset, indexes, runs"
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="report folder"
    )
    parser.add_argument("--queries", type=int, default=300, help="known-item queries to sample")
    parser.add_argument(
        "--passages", type=int, default=300, help="sampled passages for the cosine check"
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()
    machine = machine_info(PACKAGES)
    cache = args.cache.expanduser()

    print("model: all-MiniLM-L6-v2 (export cached)", flush=True)
    checkpoint, generic = prepare("minilm", cache, rebuild=False)
    from bertdot.server.encoding.artifact import load_manifest
    from bertdot.server.index.manifest import IndexManifest

    data_dir = cache / f"quality-data-{args.queries}"
    dataset = build_dataset(data_dir, args.queries)
    query_texts = dataset.pop("texts")
    print(f"dataset: {dataset['queries']} queries over {dataset['passages']} passages", flush=True)

    corpus = data_dir / "corpus.jsonl"
    # int8 calibrated on the corpus being indexed, as the README tells users to export it
    # (the queries are never among the calibration texts); fp32 and fp16 are the same files.
    artifact = cache / f"quality-artifact-{generic.name[-12:]}-{dataset['corpus_sha256'][:12]}"
    export_command = calibrated_export(checkpoint, corpus, artifact)
    fingerprint = load_manifest(artifact).fingerprint
    gates = {
        "calibrated on the corpus (`--calibration corpus.jsonl`)": load_manifest(artifact).gates,
        "built-in generic calibration texts (the default)": load_manifest(generic).gates,
    }
    key = f"{artifact.name[-25:]}"  # export code and corpus: a re-export rebuilds the indexes
    indexes = {p: cache / f"quality-index-{key}-{p}" for p in ("fp32", "int8")}
    commands = [export_command]
    commands += [build_index(artifact, corpus, index, p) for p, index in indexes.items()]
    default_ef = IndexManifest.read(indexes["fp32"]).ef_search
    exact_ef = max(dataset["passages"], 1000)

    work = cache / f"quality-runs-{key}-{args.queries}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    settings = [
        Setting("ORT fp32, exact", "fp32", None, exact=True),
        Setting("ORT fp32, HNSW ef 16", "fp32", 16),
        Setting("ORT fp32, HNSW ef 64", "fp32", 64),
        Setting(f"ORT fp32, HNSW default ef ({default_ef})", "fp32", None),
        Setting("ORT int8, exact", "int8", None, exact=True),
        Setting(f"ORT int8, HNSW default ef ({default_ef})", "int8", None),
    ]
    runs = []
    for setting in settings:
        k, ef = setting.depth(default_ef, dataset["passages"])
        reference = checkpoint if setting == settings[0] else None
        result = run_eval(setting, data_dir, artifact, indexes[setting.precision], k, ef, work,
                          reference)  # fmt: skip
        runs.append((setting, k, ef, result))
        commands.append(result["command"])

    queries_file = work / "queries.txt"
    queries_file.write_text("".join(f"{q}\n" for q in query_texts), encoding="utf-8")
    efs = sorted({*CHECK_EFS, default_ef, exact_ef})
    checks = {}
    for precision, index in indexes.items():
        out = work / f"check-{precision}.json"
        command, _ = bertdot(
            "index", "check", str(index), "--model", str(artifact), "--queries", str(queries_file),
            "--ef", ",".join(map(str, efs)), "--precision", precision, "--device", "cpu",
            "--json", str(out),
        )  # fmt: skip
        commands.append(command)
        checks[precision] = json.loads(out.read_text(encoding="utf-8"))

    reference = runs[0][3]["metrics"]["reference"]
    exact_top = ranked10(runs[0][3]["run"])
    qrels = read_qrels(data_dir / "qrels" / "test.tsv")
    rows: list[dict[str, Any]] = [
        {
            "label": "PyTorch fp32, exact (reference)",
            "precision": "pytorch-fp32",
            "depth": "1000 / brute force",
            "metrics": reference,
            "delta": {},
        }
    ]
    for setting, k, ef, result in runs:
        metrics = {m: v for m, v in result["metrics"].items() if m in METRICS}
        if k < 100:
            metrics.pop("Recall@100", None)
        if k < 1000:
            metrics.pop("Recall@1000", None)
        rows.append(
            {
                "label": setting.label,
                "precision": setting.precision,
                "k": k,
                "ef": ef,
                "depth": f"{k} / {ef:,}" + (" (≥ passages)" if setting.exact else ""),
                "metrics": metrics,
                "delta": {m: v - reference[m] for m, v in metrics.items()},
                "recall_at_10_vs_exact": checks[setting.precision]["recall@10"][str(ef)],
                "top10_overlap_vs_fp32_exact": overlap(ranked10(result["run"]), exact_top),
                "rr_changes_vs_fp32_exact": rr_changes(ranked10(result["run"]), exact_top, qrels),
                "command": result["command"],
                "wall_s": result["wall_s"],
            }
        )

    print("cosines against PyTorch fp32", flush=True)
    from bertdot.server.indexing.builtin_corpus import passages

    records = list(passages())
    sample = random.Random(SEED).sample(records, min(args.passages, len(records)))
    cosine = cosines(
        artifact, checkpoint, query_texts, [f"{r['title']} {r['text']}" for r in sample]
    )

    machine["load_average_end"] = load_average()
    extra = [f" --{name} {getattr(args, name)}" for name in ("queries", "passages")
             if getattr(args, name) != parser.get_default(name)]  # fmt: skip
    data = {
        "model": {
            "name": "minilm",
            "description": "sentence-transformers all-MiniLM-L6-v2 (dim 384, mean pooling, "
            "cosine), exported by `bertdot export` (fp32, fp16, int8 calibrated on the "
            "corpus).",
            "fingerprint": fingerprint,
        },
        "dataset": dataset,
        "default_ef": default_ef,
        "exact_ef": exact_ef,
        "rows": rows,
        "index_check": checks,
        "cosine": cosine,
        "int8_gates": {
            label: {p: dataclasses.asdict(g) for p, g in by_precision.items()}
            for label, by_precision in gates.items()
        },
        "settings": {"argv": "".join(extra)},
        "commands": commands,
        "machine": machine,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    for path in write_report(args.out, "quality-minilm", data, render_markdown(data)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
