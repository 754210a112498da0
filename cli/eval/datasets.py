"""Where an evaluation dataset comes from: a BEIR folder, or an `ir_datasets` id."""

from __future__ import annotations

from pathlib import Path

from bertdot.cli.eval.data import Dataset, DatasetError, load_beir


def load_dataset(spec: str, split: str | None = None) -> Dataset:
    """A BEIR folder, or else an `ir_datasets` id such as `msmarco-passage/dev/small`."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_beir(path, split)
    if path.exists():
        raise DatasetError(spec, None, "expected a BEIR folder or an ir_datasets id, not a file")
    if spec.startswith((".", "/", "~")) or "/" not in spec:
        raise DatasetError(spec, None, "no such folder (nor an ir_datasets id)")
    from bertdot.cli.eval.irds import load_ir_dataset

    return load_ir_dataset(spec)
