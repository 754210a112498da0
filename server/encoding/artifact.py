"""The artifact manifest: the contract between `bertdot export` and the server.

Standard library only, so the server (which never imports torch) can read it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
PRECISIONS = ("fp32", "fp16", "int8")

Pooling = Literal["cls", "mean"]
Similarity = Literal["dot", "cosine"]


class ArtifactError(ValueError):
    """An artifact directory is missing, incomplete or not one bertdot can serve."""


@dataclass(frozen=True)
class Parity:
    """How closely one precision's ONNX output matched PyTorch fp32 at export time."""

    min_cosine: float
    max_abs_diff: float
    texts: int


@dataclass(frozen=True)
class QualityGate:
    """A lossy precision measured at export against PyTorch fp32 on texts its calibration
    never saw: served by default only where `passed` (min cosine ≥ `required`)."""

    min_cosine: float
    median_cosine: float
    texts: int
    required: float
    passed: bool
    recipe: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ArtifactManifest:
    source: dict[str, str | None]
    architecture: str
    pooling: Pooling
    similarity: Similarity
    dim: int
    max_length: int
    opset: int
    files: dict[str, str]
    parity: dict[str, Parity]
    inputs: list[str]
    fingerprint: str
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)
    gates: dict[str, QualityGate] = field(default_factory=dict)  # absent in older artifacts

    def gate_passed(self, precision: str) -> bool:
        gate = self.gates.get(precision)
        return gate is not None and gate.passed and precision in self.files

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactManifest:
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ArtifactError(
                f"manifest schema_version {version!r} is not supported (expected {SCHEMA_VERSION})"
            )
        try:
            parity = {k: Parity(**v) for k, v in data["parity"].items()}
            gates = {k: QualityGate(**v) for k, v in data.get("gates", {}).items()}
            manifest = cls(
                source=dict(data["source"]),
                architecture=str(data["architecture"]),
                pooling=data["pooling"],
                similarity=data["similarity"],
                dim=int(data["dim"]),
                max_length=int(data["max_length"]),
                opset=int(data["opset"]),
                files=dict(data["files"]),
                parity=parity,
                inputs=list(data["inputs"]),
                fingerprint=str(data["fingerprint"]),
                schema_version=int(version),
                extra=dict(data.get("extra", {})),
                gates=gates,
            )
        except (KeyError, TypeError) as exc:
            raise ArtifactError(f"manifest is missing or has a malformed field: {exc}") from exc
        if manifest.pooling not in ("cls", "mean"):
            raise ArtifactError(f"manifest pooling {manifest.pooling!r} is not 'cls' or 'mean'")
        if manifest.similarity not in ("dot", "cosine"):
            raise ArtifactError(
                f"manifest similarity {manifest.similarity!r} is not 'dot' or 'cosine'"
            )
        return manifest


def load_manifest(artifact_dir: str | Path) -> ArtifactManifest:
    """Read and validate `manifest.json` of an artifact directory, checking its files exist."""
    root = Path(artifact_dir)
    path = root / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"{root} is not a bertdot artifact: {MANIFEST_NAME} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON: {exc}") from exc
    manifest = ArtifactManifest.from_dict(data)
    for name in [*manifest.files.values(), TOKENIZER_NAME]:
        if not (root / name).is_file():
            raise ArtifactError(f"artifact {root} lists {name} but the file is missing")
    return manifest


def fingerprint_files(paths: list[Path]) -> str:
    """A stable identity of an artifact's weights and tokenizer (sha256 over file contents).

    Every precision of one export shares the fingerprint: they encode the same model, so an
    index built with the fp32 file may be served with the fp16 one.
    """
    digest = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:32]
