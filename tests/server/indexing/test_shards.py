"""Indexes from vectors computed elsewhere: encode into shards (here or on Ray), import them,
resume either, refuse another model's shards and a build that cannot fit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from bertdot.server.encoding.artifact import load_manifest
from bertdot.server.encoding.encoder import Encoder
from bertdot.server.index.index import Index
from bertdot.server.indexing import build as build_module
from bertdot.server.indexing.build import (
    MemoryEstimate,
    ResourceError,
    build_index,
    check_resources,
    import_vectors,
)
from bertdot.server.indexing.encode import encode_shards, plan_parts
from bertdot.server.indexing.shards import ShardError, ShardsInfo, complete_parts, part_paths
from tests.support.fakes import make_passages, write_jsonl

PASSAGES = make_passages(250, seed=31)
QUIET = {"progress": False, "say": lambda _: None}


def stored_vectors(index_dir: Path) -> dict[str, np.ndarray]:
    index = Index.open(index_dir)
    try:
        ids = [p.id for p in PASSAGES]
        return dict(zip(ids, index.get_vectors(ids), strict=True))
    finally:
        index.close()


def cosines(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    keys = sorted(a)
    x, y = np.stack([a[k] for k in keys]), np.stack([b[k] for k in keys])
    return (x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("shards") / "corpus.jsonl", PASSAGES)


@pytest.fixture(scope="module")
def built(tiny_artifact: Path, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process build every other path must equal."""
    out = tmp_path_factory.mktemp("built") / "index"
    build_index(Encoder(tiny_artifact, device="cpu"), corpus, out, **QUIET)
    return out


def test_encoded_shards_import_into_the_index_a_build_makes(
    tiny_artifact: Path, corpus: Path, built: Path, tmp_path: Path
) -> None:
    encoder = Encoder(tiny_artifact, device="cpu")
    shards = tmp_path / "shards"
    assert encode_shards(encoder, corpus, shards, part_size=100, say=lambda _: None) == 250
    assert complete_parts(shards) == [0, 1, 2]
    assert json.loads((shards / "shards.json").read_text())["fingerprint"] == encoder.fingerprint
    manifest = import_vectors(load_manifest(tiny_artifact), shards, tmp_path / "index", **QUIET)
    assert manifest.count == 250 and manifest.fingerprint == encoder.fingerprint
    assert cosines(stored_vectors(built), stored_vectors(tmp_path / "index")).min() >= 0.99999
    index = Index.open(tmp_path / "index", expected_fingerprint=encoder.fingerprint)
    try:
        texts = index.get_passages([p.id for p in PASSAGES[:5]])
        assert [texts[p.id].text for p in PASSAGES[:5]] == [p.text for p in PASSAGES[:5]]
    finally:
        index.close()


def test_encode_resumes_part_by_part(tiny_artifact: Path, corpus: Path, tmp_path: Path) -> None:
    encoder = Encoder(tiny_artifact, device="cpu")
    shards = tmp_path / "shards"
    encode_shards(encoder, corpus, shards, part_size=100, say=lambda _: None)
    part_paths(shards, 1)[1].unlink()  # as if killed while writing part 1
    assert encode_shards(encoder, corpus, shards, part_size=100, say=lambda _: None) == 100
    assert encode_shards(encoder, corpus, shards, part_size=100, say=lambda _: None) == 0
    parts = plan_parts(corpus, 100)
    assert [(p.first_line, p.lines) for p in parts] == [(1, 100), (101, 100), (201, 50)]


def test_import_resumes_after_an_interruption(
    tiny_artifact: Path, corpus: Path, built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shards = tmp_path / "shards"
    encode_shards(Encoder(tiny_artifact, device="cpu"), corpus, shards, part_size=100,
                  say=lambda _: None)  # fmt: skip
    model = load_manifest(tiny_artifact)
    original = build_module.PassageStore.add
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(build_module.PassageStore, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_vectors(model, shards, tmp_path / "index", **QUIET)
    monkeypatch.setattr(build_module.PassageStore, "add", original)
    manifest = import_vectors(model, shards, tmp_path / "index", resume=True, **QUIET)
    assert manifest.count == 250  # nothing twice, nothing missing
    assert cosines(stored_vectors(built), stored_vectors(tmp_path / "index")).min() >= 0.99999


def test_shards_of_another_model_or_damaged_are_refused(
    tiny_artifact: Path, corpus: Path, tmp_path: Path
) -> None:
    shards = tmp_path / "shards"
    encode_shards(Encoder(tiny_artifact, device="cpu"), corpus, shards, part_size=100,
                  say=lambda _: None)  # fmt: skip
    other = tmp_path / "other"
    shutil.copytree(shards, other)
    info = ShardsInfo.read(other)
    ShardsInfo("f" * 64, info.similarity, info.dim).write(other)
    with pytest.raises(ShardError, match="made with another model"):
        import_vectors(load_manifest(tiny_artifact), other, tmp_path / "x", **QUIET)
    short = tmp_path / "short"
    shutil.copytree(shards, short)
    np.save(part_paths(short, 1)[1], np.zeros((99, info.dim), dtype=np.float32))
    with pytest.raises(ShardError, match=r"fewer vectors than part-00001\.jsonl has passages"):
        import_vectors(load_manifest(tiny_artifact), short, tmp_path / "y", **QUIET)


def test_a_build_that_cannot_fit_is_refused_with_its_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bill = MemoryEstimate.of(8_841_823, 768, 16, corpus_bytes=3_000_000_000)
    monkeypatch.setattr(build_module, "available_memory", lambda: 8 << 30)
    with pytest.raises(ResourceError) as refused:
        check_resources(bill, tmp_path / "index", force=False, say=lambda _: None)
    assert "needs ~" in str(refused.value) and "8.0 GiB is available" in str(refused.value)
    assert "--force" in str(refused.value)
    said: list[str] = []
    check_resources(bill, tmp_path / "index", force=True, say=said.append)
    assert said and said[0].startswith("warning: this build does not fit")


@pytest.mark.slow
def test_ray_encodes_the_same_vectors_as_one_process(
    tiny_artifact: Path, corpus: Path, built: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="the ray extra is part of the dev install")
    from bertdot.server.indexing.ray_encode import encode_on_ray

    encoder = Encoder(tiny_artifact, device="cpu")
    shards = tmp_path / "shards"
    ray.init(num_cpus=2, log_to_driver=False, include_dashboard=False)
    try:
        written = encode_on_ray(encoder, tiny_artifact, corpus, shards, actors=2, part_size=60,
                                say=lambda _: None)  # fmt: skip
    finally:
        ray.shutdown()
    assert written == 250 and complete_parts(shards) == [0, 1, 2, 3, 4]
    import_vectors(load_manifest(tiny_artifact), shards, tmp_path / "index", **QUIET)
    assert cosines(stored_vectors(built), stored_vectors(tmp_path / "index")).min() >= 0.99999
