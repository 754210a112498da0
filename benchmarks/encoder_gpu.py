"""PyTorch eager fp16 vs the server's Encoder on ONNX Runtime's CUDA provider, on one GPU.

    python benchmarks/encoder_gpu.py                 # seed-shaped DistilBERT, on the GPU
    python benchmarks/encoder_gpu.py --device cpu    # the same steps on the CPU (a dry run)

All contenders go from text to pooled float32 vectors on the host (tokenize, copy in, run,
copy out, pool), which is what a query pays. Ours is
`bertdot.server.encoding.encoder.Encoder` as the server runs it (the fp16 file, IO binding,
the shapes warmed up first), twice: plain, and replaying captured CUDA graphs (the server's
default on CUDA). PyTorch runs the
checkpoint with `.half()` under `inference_mode`. Writes `encoder-<model>-<device>.json/.md`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (
    interleaved,
    machine_info,
    markdown_table,
    row_cosines,
    summarize_ms,
    write_report,
)
from encoder import (
    DEFAULT_CACHE,
    EDGE_TEXTS,
    exact_texts,
    generated_corpus,
    prepare,
)

PACKAGES = ("onnxruntime-gpu", "onnxruntime", "torch", "transformers", "tokenizers", "numpy")
SINGLE_LENGTHS = (8, 16, 32)
BATCHES = ((32, 32), (256, 32))  # (texts, tokens per text)
TARGET_P50_MS = 1.5  # one 32-token query on one H100 (seed-shaped model)
PLAIN = "bertdot-ort"  # the Encoder with every shape on the plain session
GRAPHS = "bertdot-graphs"  # the Encoder replaying captured CUDA graphs (the server's default)


class TorchHalf:
    """PyTorch eager on the chosen device: fp16 on a GPU, fp32 on the CPU (no fp16 kernels
    worth timing there). Pooled as the server pools."""

    def __init__(self, model_dir: Path, pooling: str, max_length: int, device: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch, self.device = torch, device
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModel.from_pretrained(str(model_dir)).eval().to(device)
        self.model = model.half() if device == "cuda" else model
        self.pooling, self.max_length = pooling, max_length

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        from bertdot.server.encoding.pooling import pool

        inputs = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length,
            return_tensors="pt",
        )  # fmt: skip
        with self.torch.inference_mode():
            hidden = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
            host = hidden.last_hidden_state.float().cpu().numpy()  # waits for the GPU
        return pool(host, inputs["attention_mask"].numpy(), self.pooling)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, truncation=True, max_length=self.max_length).input_ids)


def _cycle_call(run: Callable[[Sequence[str]], object], texts: list[str], n: int) -> Any:
    position = [0]

    def call() -> object:
        start = position[0]
        position[0] = (start + n) % len(texts)
        return run([texts[(start + i) % len(texts)] for i in range(n)])

    return call


def measure(
    torch_model: TorchHalf,
    encoders: dict[str, Any],
    rounds: int,
    rng: random.Random,
    batches: Sequence[Any],
) -> dict[str, dict[str, dict[str, float]]]:
    """Each shape's p50 for PyTorch and for each of our encoders, interleaved in one run."""
    first = next(iter(encoders.values()))
    counters = [torch_model.count_tokens, lambda t: int(first.tokenize([t])[0].length)]
    runners: dict[str, Callable[[Sequence[str]], object]] = {"pytorch": torch_model.encode}
    for name, encoder in encoders.items():
        runners[name] = lambda t, e=encoder: e.encode(t).vectors
    results: dict[str, dict[str, dict[str, float]]] = {}
    shapes = [(1, n) for n in SINGLE_LENGTHS] + list(batches)
    for size, tokens in shapes:
        texts = exact_texts(tokens, max(size, 16), counters, rng)
        calls = {name: _cycle_call(run, texts, size) for name, run in runners.items()}
        for call in calls.values():  # warm-up of this shape (CUDA kernels, allocator)
            for _ in range(5):
                call()
        block = 20 if size == 1 else 5
        samples = interleaved(calls, rounds=rounds, block=block, warmup=2)
        stats = {name: summarize_ms(s) for name, s in samples.items()}
        for s in stats.values():
            s["texts_per_s"] = round(size / (s["median_ms"] / 1000.0), 1)
        key = f"{size}x{tokens}"
        torch_ms = stats["pytorch"]["median_ms"]
        ratios = {"bertdot_over_pytorch": round(stats[PLAIN]["median_ms"] / torch_ms, 3)}
        if GRAPHS in stats:
            ratios["graphs_over_pytorch"] = round(stats[GRAPHS]["median_ms"] / torch_ms, 3)
            ratios["graphs_over_plain"] = round(
                stats[GRAPHS]["median_ms"] / stats[PLAIN]["median_ms"], 3
            )
        stats["ratio"] = ratios
        results[key] = stats
        print(
            f"  {key:>7}: "
            + ", ".join(f"{name} {stats[name]['median_ms']:.3f} ms" for name in runners),
            flush=True,
        )
    return results


def served(speed: dict[str, Any], key: str) -> str:
    """Which of our contenders the server runs by default (graphs where they were timed)."""
    return GRAPHS if GRAPHS in speed[key] else PLAIN


def quality(
    torch_model: TorchHalf, encoders: dict[str, Any], checkpoint: Path, device: str
) -> dict[str, Any]:
    """Cosine of each contender's vectors against PyTorch fp32 (the export's reference)."""
    rng = random.Random(1)
    passages, queries = generated_corpus(rng, 150, 50)
    texts = list(EDGE_TEXTS) + passages + queries
    reference = TorchHalf(checkpoint, torch_model.pooling, torch_model.max_length, "cpu")
    want = np.concatenate([reference.encode(texts[i : i + 32]) for i in range(0, len(texts), 32)])
    half = np.concatenate([torch_model.encode(texts[i : i + 32]) for i in range(0, len(texts), 32)])
    vectors = {name: e.encode(texts).vectors for name, e in encoders.items()}
    # Single queries too: they take the smallest buckets, the batches above the larger ones.
    if GRAPHS in encoders:
        vectors["bertdot-graphs-one-by-one"] = np.concatenate(
            [encoders[GRAPHS].encode([t]).vectors for t in texts]
        )
    vectors[f"pytorch_{'fp16' if device == 'cuda' else 'fp32'}"] = half
    out: dict[str, Any] = {"texts": len(texts)}
    for name, got in vectors.items():
        c = row_cosines(got, want)
        out[f"{name}_vs_pytorch_fp32"] = {
            "min": round(float(c.min()), 6), "median": round(float(np.median(c)), 6)
        }  # fmt: skip
    return out


def render(data: dict[str, Any]) -> str:
    gpu = data["machine"].get("gpu") or data["machine"]["cpu"]
    with_graphs = any(GRAPHS in stats for stats in data["speed"].values())
    rows = []
    for key, stats in data["speed"].items():
        row = [key, f"{stats['pytorch']['median_ms']:.3f}", f"{stats[PLAIN]['median_ms']:.3f}"]
        if with_graphs:
            ratio = stats["ratio"]["graphs_over_plain"]
            row += [f"{stats[GRAPHS]['median_ms']:.3f}", f"{ratio:.2f}"]
        best = stats[served(data["speed"], key)]
        row += [f"{best['median_ms'] / stats['pytorch']['median_ms']:.2f}",
                f"{best['texts_per_s']:,.0f}"]  # fmt: skip
        rows.append(row)
    header = ["texts x tokens", "PyTorch p50 ms", "bertdot plain p50 ms"]
    if with_graphs:
        header += ["bertdot CUDA graphs p50 ms", "graphs / plain"]
    header += ["served / PyTorch", "served texts/s"]
    target = data["target"]
    lines = [
        f"# Encoder on {data['device']}: PyTorch eager vs bertdot (ONNX Runtime)",
        "",
        f"Device: {gpu}. Provider: {data['provider']} ({data['precision']}). "
        f"Model: {data['model']}. Command: `{data['command']}`.",
        "",
        markdown_table(header, rows),
        "",
        "Plain: every shape on ONNX Runtime's session. CUDA graphs: the server's default on "
        "CUDA, captured graphs replayed for batches of up to 32 texts (256 here) and 128 "
        "tokens. Served: what the server runs by default.",
        "",
        f"Target (one 32-token query, p50 ≤ {TARGET_P50_MS} ms on one H100), "
        f"{target['contender']}: {target['p50_ms']:.3f} ms, {'met' if target['met'] else 'not met'}"
        f"{'' if data['device'] == 'cuda' else ' (not applicable: CPU dry run)'}.",
        "",
        f"Quality: {data['quality']}",
        "",
    ]
    return "\n".join(lines)


def _gpu_name() -> str | None:
    try:
        import torch

        return str(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else None
    except Exception:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("seed", "minilm"), default="seed")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)

    from bertdot.server.encoding.artifact import load_manifest
    from bertdot.server.encoding.encoder import Encoder

    started = time.perf_counter()
    machine = machine_info(PACKAGES) | {"gpu": _gpu_name()}
    checkpoint, artifact = prepare(args.model, args.cache, rebuild=False)
    manifest = load_manifest(artifact)
    ours = Encoder(artifact, device=args.device, batch_size=256, cuda_graphs=False)
    print(f"bertdot encoder: {ours.describe()}", flush=True)
    if args.device == "cuda" and ours.provider != "CUDAExecutionProvider":
        raise SystemExit(f"asked for cuda but ONNX Runtime runs {ours.provider}")
    encoders = {PLAIN: ours}
    if args.device == "cuda":
        graphs = Encoder(artifact, device="cuda", batch_size=256)
        print(f"bertdot encoder with graphs: {graphs.describe()}", flush=True)
        if graphs.graph_buckets:
            encoders[GRAPHS] = graphs
    torch_model = TorchHalf(checkpoint, manifest.pooling, manifest.max_length, args.device)
    # A CPU dry run skips the large batch: it checks the steps, not the GPU's throughput.
    batches = BATCHES if args.device == "cuda" else BATCHES[:1]
    speed = measure(torch_model, encoders, args.rounds, random.Random(0), batches)
    contender = served(speed, "1x32")
    p50 = speed["1x32"][contender]["median_ms"]
    data = {
        "model": args.model,
        "device": args.device,
        "provider": ours.provider,
        "precision": ours.precision,
        "encoders": {name: e.describe() for name, e in encoders.items()},
        "command": "python " + " ".join(["benchmarks/encoder_gpu.py", *sys.argv[1:]]),
        "machine": machine,
        "speed": speed,
        "target": {
            "contender": contender,
            "p50_ms": p50,
            "max_p50_ms": TARGET_P50_MS,
            "met": p50 <= TARGET_P50_MS,
        },
        "quality": quality(torch_model, encoders, checkpoint, args.device),
    }
    data["wall_s"] = round(time.perf_counter() - started, 1)
    stem = f"encoder-{args.model}-{args.device}"
    for path in write_report(args.out, stem, data, render(data)):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
