"""`bertdot index encode --ray`: the corpus parts encoded by a Ray cluster (Ray Data).

The parts (`encode.plan_parts`) become a Ray dataset of one row per part; `map_batches`
runs them on a pool of actors, each holding one ONNX Runtime encoder for its whole life: one
actor per GPU (`num_gpus=1`, the CUDA provider with the fp16 file) or per group of CPU
cores. Every actor writes its parts straight into the shard folder, which must be on storage
that every node sees (a shared file system). A part already written is skipped, so a
killed job resumes where it stopped. `ray` is an optional extra (`bertdot[ray]`), imported
here only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from bertdot.server.indexing.encode import Part, encode_part, prepare

INSTALL_HINT = "--ray needs Ray Data: pip install 'bertdot[ray]'"


class _EncodeParts:
    """A Ray Data actor: one encoder, loaded once, for every part it is given."""

    def __init__(self, artifact: str, corpus: str, out: str, device: str, threads: int) -> None:
        from bertdot.server.encoding.encoder import Encoder

        self.encoder = Encoder(Path(artifact), device=device, intra_op_threads=threads)  # type: ignore[arg-type]
        self.corpus, self.out = Path(corpus), Path(out)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        written = []
        for row in range(len(batch["number"])):
            part = Part(
                *(int(batch[key][row]) for key in ("number", "offset", "first_line", "lines"))
            )
            written.append(encode_part(self.encoder, self.corpus, part, self.out))
        return {"number": batch["number"], "written": np.asarray(written, dtype=np.int64)}


def encode_on_ray(
    model: Any,
    artifact: Path,
    corpus: Path,
    out: Path,
    *,
    address: str | None = None,
    actors: int = 1,
    cpus_per_actor: int = 1,
    gpus_per_actor: int = 0,
    part_size: int = 10_000,
    say: Callable[[str], None] = print,
) -> int:
    """Encode every part of `corpus` into `out` on Ray; returns the passages encoded now.
    `address`: a running cluster ("auto", "ray://host:10001"); None starts a local one."""
    try:
        import ray
    except ImportError:
        raise ImportError(INSTALL_HINT) from None
    parts = prepare(model, corpus, out, part_size, str(artifact))
    started = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    device = "cuda" if gpus_per_actor else "cpu"
    rows = [asdict(part) for part in parts]
    dataset = ray.data.from_items(rows).map_batches(
        _EncodeParts,
        batch_size=1,
        fn_constructor_args=(
            str(artifact.resolve()),
            str(corpus.resolve()),
            str(out.resolve()),
            device,
            cpus_per_actor,
        ),
        concurrency=actors,
        num_cpus=cpus_per_actor,
        num_gpus=gpus_per_actor,
    )
    written = sum(int(row["written"]) for row in dataset.take_all())
    seconds = time.perf_counter() - started
    say(f"{len(parts)} parts in {out} on {actors} Ray actor(s): {written:,} passages encoded now "
        f"in {seconds:.1f} s ({written / max(seconds, 1e-9):,.0f}/s)")  # fmt: skip
    return written
