"""Locate a Hugging Face checkpoint and read what it says about pooling and similarity."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bertdot.export.errors import ExportError

# Architectures whose export, tokenizer and pooling are tested end to end.
SUPPORTED_MODEL_TYPES = ("distilbert", "bert")


@dataclass(frozen=True)
class CheckpointInfo:
    """What export needs to know about a checkpoint before loading its weights."""

    source: str
    revision: str | None
    model_dir: Path  # folder holding config.json and the weights
    root_dir: Path  # folder holding a sentence-transformers config, if any
    model_type: str
    dim: int
    max_positions: int
    pooling: str
    similarity: str
    max_length: int
    pooling_origin: str


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"cannot read {path}: {exc}") from exc


def resolve(model: str, revision: str | None = None) -> tuple[Path, str | None]:
    """A local directory as is, or a hub id downloaded (or found in the local cache)."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ExportError(f"{model} is a file; expected a checkpoint directory or hub id")
        return path.resolve(), revision or _weights_hash(path)
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ExportError(f"model directory {model} does not exist")
    try:
        from huggingface_hub import snapshot_download

        local = Path(snapshot_download(model, revision=revision))
    except Exception as exc:  # network, auth, unknown repo: one clear line for the user
        raise ExportError(
            f"cannot fetch {model!r} from the Hugging Face hub ({type(exc).__name__}); "
            "pass a local checkpoint directory instead"
        ) from exc
    return local, local.name  # snapshot folders are named by commit hash


def _weights_hash(path: Path) -> str | None:
    for name in ("model.safetensors", "pytorch_model.bin"):
        candidates = list(path.glob(name)) + list(path.glob(f"*/{name}"))
        if candidates:
            digest = hashlib.sha256()
            with candidates[0].open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            return "sha256:" + digest.hexdigest()[:16]
    return None


def _sentence_transformers_defaults(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """Pooling, similarity and max length from a sentence-transformers layout, if present."""
    modules_path = root / "modules.json"
    if not modules_path.is_file():
        return None
    modules = _read_json(modules_path)
    found: dict[str, Any] = {"similarity": "dot"}
    model_dir = root
    for module in modules:
        kind = str(module.get("type", ""))
        folder = root / str(module.get("path", ""))
        if kind.endswith(".Transformer"):
            model_dir = folder
            bert_config = folder / "sentence_bert_config.json"
            if bert_config.is_file():
                found["max_length"] = _read_json(bert_config).get("max_seq_length")
        elif kind.endswith(".Pooling"):
            pooling = _read_json(folder / "config.json")
            if pooling.get("pooling_mode_cls_token"):
                found["pooling"] = "cls"
            elif pooling.get("pooling_mode_mean_tokens"):
                found["pooling"] = "mean"
            else:
                raise ExportError(f"{folder}: only CLS or mean pooling is supported")
        elif kind.endswith(".Normalize"):
            found["similarity"] = "cosine"
    st_config = root / "config_sentence_transformers.json"
    if st_config.is_file():
        named = _read_json(st_config).get("similarity_fn_name")
        if named in ("cosine", "dot"):
            found["similarity"] = named
    return model_dir, found


def inspect_checkpoint(model: str, revision: str | None = None) -> CheckpointInfo:
    root, resolved_revision = resolve(model, revision)
    st = _sentence_transformers_defaults(root)
    model_dir, defaults = st if st else (root, {})
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise ExportError(f"{model_dir} has no config.json: not a Hugging Face checkpoint")
    config = _read_json(config_path)
    model_type = str(config.get("model_type", "unknown"))
    if model_type not in SUPPORTED_MODEL_TYPES:
        supported = ", ".join(SUPPORTED_MODEL_TYPES)
        raise ExportError(
            f"{model}: model type {model_type!r} is not a supported encoder "
            f"(supported: {supported})"
        )
    dim = int(config.get("dim") or config.get("hidden_size") or 0)
    max_positions = int(config.get("max_position_embeddings", 512))
    return CheckpointInfo(
        source=model,
        revision=resolved_revision,
        model_dir=model_dir,
        root_dir=root,
        model_type=model_type,
        dim=dim,
        max_positions=max_positions,
        pooling=defaults.get("pooling", "cls"),
        similarity=defaults.get("similarity", "dot"),
        max_length=min(int(defaults.get("max_length") or max_positions), max_positions),
        pooling_origin="sentence-transformers config" if st else "default for BERT_Dot",
    )
