"""Write the artifact's `tokenizer.json`: a fast tokenizer even from a bare `vocab.txt`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertdot.export.errors import ExportError


def load_reference_tokenizer(model_dir: Path) -> Any:
    """The Hugging Face fast tokenizer of the checkpoint (converted from vocab.txt if needed).

    A checkpoint without tokenizer settings (the BERT_Dot seed has only vocab.txt) gets the
    model type's defaults, which for BERT-family WordPiece vocabularies means lower-casing.
    """
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True)
    except Exception as exc:  # missing or unreadable vocabulary files
        raise ExportError(f"cannot load a tokenizer from {model_dir}: {exc}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{model_dir}: no fast tokenizer could be built")
    return tokenizer


def write_tokenizer_json(tokenizer: Any, max_length: int, path: Path) -> None:
    """Save the Rust tokenizer with padding off and truncation at `max_length`.

    Padding happens per batch at serving time; a file that pads every input to a fixed
    length (as some shipped files do) would waste compute on every short query.
    """
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length)
    backend.save(str(path))
