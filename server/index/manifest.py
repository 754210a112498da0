"""The index manifest (the contract between a build and a server) and its errors.

`manifest.json` is written last by a build and replaced atomically by every graph
snapshot: it names the graph file, its sha256 and the store sequence the graph contains.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bertdot.server.index.graph import fsync_dir, space_for

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
STORE_NAME = "passages.sqlite"
GRAPH_NAME = "graph.hnsw"
DEFAULT_EF = 128


class IndexLoadError(Exception):
    """An index directory cannot be opened (missing, unfinished, corrupt)."""


class IndexMismatchError(IndexLoadError):
    """The index was built by another model, or its space does not fit the similarity."""


@dataclass(frozen=True)
class IndexManifest:
    fingerprint: str
    similarity: str
    space: str
    dim: int
    count: int
    M: int
    ef_construction: int
    ef_search: int
    graph_file: str
    graph_sha256: str
    graph_seq: int  # the store's write sequence the graph contains; later writes replay
    created_at: str
    corpus: str | None = None
    # The graph's own copy of the vectors: "f32" (hnswlib), "f16" or "i8" (usearch, compact;
    # candidates are rescored with the store's float32 vectors). Older manifests: "f32".
    vectors: str = "f32"
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, index_dir: str | Path) -> IndexManifest:
        root = Path(index_dir)
        path = root / MANIFEST_NAME
        if not path.is_file():
            if (root / STORE_NAME).is_file():
                raise IndexLoadError(
                    f"{root} is an unfinished build (no {MANIFEST_NAME}); finish it with "
                    "`bertdot index build ... --resume`"
                )
            raise IndexLoadError(f"{root} is not a bertdot index: {MANIFEST_NAME} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("schema_version") != SCHEMA_VERSION:
                raise IndexLoadError(
                    f"{path}: schema_version {data.get('schema_version')!r} is not supported "
                    f"(expected {SCHEMA_VERSION})"
                )
            return cls(**data)
        except (OSError, json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise IndexLoadError(f"{path} is not a valid index manifest: {exc}") from exc

    def write(self, index_dir: str | Path) -> None:
        fields = asdict(self)
        if fields["vectors"] == "f32":
            # Left out when it is the default, so that a float32 index stays readable by
            # releases from before compact vectors (they refuse an unknown field).
            del fields["vectors"]
        text = json.dumps(fields, indent=2, sort_keys=True) + "\n"
        write_atomic(Path(index_dir) / MANIFEST_NAME, text)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def check_compatible(
    manifest: IndexManifest,
    root: Path,
    expected_fingerprint: str | None,
    expected_similarity: str | None,
) -> None:
    try:
        space = space_for(manifest.similarity)
    except ValueError as exc:
        raise IndexMismatchError(f"index {root}: {exc}") from exc
    if manifest.space != space:
        raise IndexMismatchError(
            f"index {root} uses hnswlib space {manifest.space!r}, but its model's similarity "
            f"{manifest.similarity!r} needs {space!r}; rebuild the index"
        )
    if expected_similarity is not None and expected_similarity != manifest.similarity:
        raise IndexMismatchError(
            f"index {root} was built for {manifest.similarity!r} similarity, but the model "
            f"uses {expected_similarity!r}; rebuild the index with this model"
        )
    if expected_fingerprint is not None and expected_fingerprint != manifest.fingerprint:
        raise IndexMismatchError(
            f"index {root} was built with another model (artifact fingerprint "
            f"{manifest.fingerprint}, this model is {expected_fingerprint}); "
            "rebuild the index with this model or serve it with the model that built it"
        )
