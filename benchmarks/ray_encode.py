"""Corpus encoding on Ray: passages/s with 1 and 2 actors, beside the same encode in one process.

    python benchmarks/ray_encode.py                  # MiniLM, 4,000 generated passages
    python benchmarks/ray_encode.py --model seed     # BERT_Dot-shaped (768-dim), slower

Every setting encodes the same corpus into fresh vector shards (`bertdot index encode`'s
code): in this process (`encode_shards`, ONNX Runtime on all cores), and on a local Ray
instance (`encode_on_ray`) with one actor holding all cores and with two actors of one core
each. Settings alternate over `--rounds`; medians of passages/s are reported with ratios to
the single process, and the vectors of every setting are checked against the single
process's (cosine). Ray's start-up is outside the timing (a cluster is up before a job).
Writes `ray-encode-<model>.json` and `.md`.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, machine_info, markdown_table, usable_cores, write_report
from encoder import DEFAULT_CACHE, generated_corpus, prepare

from bertdot.server.encoding.encoder import Encoder
from bertdot.server.indexing.encode import encode_shards
from bertdot.server.indexing.ray_encode import encode_on_ray
from bertdot.server.indexing.shards import ShardsInfo, read_parts
from server import git_commit

PART = 500


def write_corpus(path: Path, n: int) -> Path:
    import json

    texts, _ = generated_corpus(random.Random(0), n, 0)
    path.write_text(
        "".join(json.dumps({"_id": f"p{i}", "text": t}) + "\n" for i, t in enumerate(texts))
    )
    return path


def vectors_of(folder: Path) -> np.ndarray:
    info = ShardsInfo.read(folder)
    return np.concatenate([rows for _, rows in read_parts(folder, info)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("minilm", "seed"), default="minilm")
    parser.add_argument("--passages", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    import ray

    _, artifact = prepare(args.model, args.cache, False)
    folder = args.cache / f"ray-encode-{args.model}"
    folder.mkdir(parents=True, exist_ok=True)
    corpus = write_corpus(folder / "corpus.jsonl", args.passages)
    cores = usable_cores()
    encoder = Encoder(artifact, device="cpu")
    ray.init(num_cpus=cores, log_to_driver=False, include_dashboard=False)

    def on_ray(actors: int, cpus: int) -> Any:
        return lambda out: encode_on_ray(
            encoder, artifact, corpus, out, actors=actors, cpus_per_actor=cpus, part_size=PART,
            say=lambda _: None,
        )  # fmt: skip

    settings = {
        "one process": lambda out: encode_shards(
            encoder, corpus, out, part_size=PART, say=lambda _: None
        ),
        f"Ray, 1 actor × {cores} cores": on_ray(1, cores),
        f"Ray, {cores} actors × 1 core": on_ray(cores, 1),
    }
    rates: dict[str, list[float]] = {name: [] for name in settings}
    cosines: dict[str, float] = {}
    reference: np.ndarray | None = None
    try:
        for round_no in range(args.rounds):
            for name, run in settings.items():
                out = folder / "shards"
                shutil.rmtree(out, ignore_errors=True)
                started = time.perf_counter()
                written = run(out)
                seconds = time.perf_counter() - started
                rates[name].append(written / seconds)
                vectors = vectors_of(out)
                if reference is None:
                    reference = vectors
                cos = (
                    (vectors * reference).sum(1)
                    / np.linalg.norm(vectors, axis=1)
                    / np.linalg.norm(reference, axis=1)
                )
                cosines[name] = min(cosines.get(name, 1.0), float(cos.min()))
                print(
                    f"  round {round_no + 1} {name}: {written / seconds:,.0f} passages/s",
                    flush=True,
                )
    finally:
        ray.shutdown()
    base = statistics.median(rates["one process"])
    rows = [
        [name, f"{statistics.median(r):,.0f}", f"{statistics.median(r) / base:.2f}",
         f"{cosines[name]:.6f}"]
        for name, r in rates.items()
    ]  # fmt: skip
    data: dict[str, Any] = {
        "command": "python benchmarks/ray_encode.py " + " ".join(argv or sys.argv[1:]),
        "commit": git_commit(),
        "machine": machine_info(["ray", "onnxruntime"]),
        "settings": {
            "model": args.model, "passages": args.passages, "rounds": args.rounds, "part": PART,
        },
        "passages_per_s": rates,
        "min_cosine_vs_one_process": cosines,
    }  # fmt: skip
    data["machine"]["load_average_end"] = load_average()
    markdown = "\n".join([
        f"# Corpus encoding on Ray ({args.model}, {args.passages:,} passages)", "",
        f"`{data['command']}` at commit {data['commit']}; {data['machine']['cpu']}, "
        f"{cores} cores; medians of {args.rounds} alternating rounds.", "",
        markdown_table(["setting", "passages/s", "× one process", "min cosine vs one process"],
                       rows),
    ]) + "\n"  # fmt: skip
    for path in write_report(args.out, f"ray-encode-{args.model}", data, markdown):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
