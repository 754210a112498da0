"""The hnswlib wrapper and the Index: real scores, exact search, refusals, recall."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bertdot.server.index.corpus import Passage
from bertdot.server.index.graph import GraphFileError, HnswGraph, search_threads
from bertdot.server.index.index import (
    DEFAULT_EF,
    GRAPH_NAME,
    MANIFEST_NAME,
    STORE_NAME,
    Index,
    IndexLoadError,
    IndexManifest,
    IndexMismatchError,
)
from bertdot.server.indexing.build import build_index
from tests.support.fakes import (
    FakeEncoder,
    make_passages,
    make_queries,
    measure_recall,
    write_jsonl,
)


def _random(n: int, dim: int, seed: int = 0, scale: float = 4.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, dim)) * scale).astype(np.float32)


# -- HnswGraph -----------------------------------------------------------------------------


@pytest.mark.parametrize("space", ["ip", "cosine"])
def test_graph_scores_are_similarities_not_distances(space: str) -> None:
    data, queries = _random(300, 16), _random(5, 16, seed=1)
    graph = HnswGraph.create(space, 16, 300)
    graph.add(data, np.arange(300))
    labels, scores = graph.search(queries, k=10, ef=300)
    if space == "cosine":
        data = data / np.linalg.norm(data, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = np.einsum("qd,qkd->qk", queries, data[labels])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-4)
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    if space == "ip":
        assert np.abs(scores).max() > 10  # unnormalised dot products, not 1 − distance


def test_batches_of_nine_rows_or_more_are_searched_on_several_threads() -> None:
    # hnswlib uses one thread unless rows > 4 × the threads asked for.
    assert [search_threads(rows, 16) for rows in (1, 8, 9, 16, 32, 64, 65, 1000)] == [
        1, 1, 2, 3, 7, 15, 16, 16
    ]  # fmt: skip
    assert search_threads(32, 2) == 2


def test_all_cores_means_the_core_count_for_hnswlib_adds(monkeypatch: pytest.MonkeyPatch) -> None:
    """hnswlib's add_items runs on one thread when its default is -1: "all cores" must reach
    it as the count (an index build used one of two cores before)."""
    import bertdot.server.index.graph as graph_module

    monkeypatch.setattr(graph_module, "usable_cores", lambda: 3)
    graph = HnswGraph.create("ip", 4, 10)
    graph.set_num_threads(0)
    assert graph._index.num_threads == 3
    graph.set_num_threads(5)
    assert graph._index.num_threads == 5


def test_a_batch_search_answers_each_row_as_a_lone_search_would() -> None:
    data, queries = _random(2000, 16), _random(40, 16, seed=1)
    graph = HnswGraph.create("ip", 16, 2000)
    graph.add(data, np.arange(2000))
    graph.set_num_threads(4)  # 40 rows: 4 threads, whatever this machine's cores
    labels, scores = graph.search(queries, k=10, ef=64)
    for row, query in enumerate(queries):
        alone_labels, alone_scores = graph.search(query[None, :], k=10, ef=64)
        np.testing.assert_array_equal(labels[row], alone_labels[0])
        np.testing.assert_allclose(scores[row], alone_scores[0], rtol=1e-6)


def test_graph_k_larger_than_count_and_empty_graph() -> None:
    graph = HnswGraph.create("ip", 4, 10)
    labels, scores = graph.search(_random(2, 4), k=5, ef=10)
    assert labels.shape == scores.shape == (2, 0)
    graph.add(_random(3, 4), np.array([7, 8, 9]))
    labels, _ = graph.search(_random(2, 4), k=10, ef=1)
    assert labels.shape == (2, 3)
    assert set(labels[0].tolist()) == {7, 8, 9}


def test_graph_grows_past_capacity_and_deletes() -> None:
    graph = HnswGraph.create("ip", 8, 4)
    graph.add(_random(10, 8), np.arange(10))
    assert graph.count == 10 and graph.capacity >= 10
    graph.mark_deleted(3)
    graph.mark_deleted(3)  # idempotent
    assert graph.count == 9
    labels, _ = graph.search(_random(20, 8, seed=5), k=9, ef=50)
    assert 3 not in labels and labels.shape == (20, 9)
    graph.add(_random(1, 8, seed=6), np.array([3]))  # re-adding a deleted label revives it
    assert graph.count == 10


class PartlyReachable:
    """An hnswlib index whose searches reach only `reach` live elements, as after heavy
    churn: asking for more raises, as hnswlib does, even at the largest ef."""

    def __init__(self, real: object, reach: int) -> None:
        self._real = real
        self.reach = reach

    def knn_query(
        self, queries: np.ndarray, k: int, num_threads: int = -1
    ) -> tuple[np.ndarray, np.ndarray]:
        if k > self.reach:
            raise RuntimeError("Cannot return the results in a contiguous 2D array.")
        return self._real.knn_query(queries, k=k, num_threads=num_threads)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._real, name)


def test_a_small_graph_that_reaches_fewer_than_k_is_searched_exactly() -> None:
    graph = HnswGraph.create("ip", 8, 64)
    vectors = _random(40, 8)
    graph.add(vectors, np.arange(40))
    graph.mark_deleted(7)
    queries = _random(3, 8, seed=2)
    graph._index = PartlyReachable(graph._index, reach=5)  # type: ignore[assignment]
    labels, scores = graph.search(queries, k=39, ef=64)  # an INTERNAL error before
    dots = queries @ vectors.T
    dots[:, 7] = -np.inf  # deleted: never answered
    assert (labels == np.argsort(-dots, axis=1, kind="stable")[:, :39]).all()
    assert np.allclose(scores, np.take_along_axis(dots, labels, axis=1), atol=1e-5)


def test_a_large_graph_that_reaches_fewer_than_k_answers_the_hits_it_reaches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bertdot.server.index import graph as hnsw

    monkeypatch.setattr(hnsw, "EXACT_FALLBACK_MAX", 10)  # 40 elements count as large here
    graph = HnswGraph.create("ip", 8, 64)
    graph.add(_random(40, 8), np.arange(40))
    queries = _random(3, 8, seed=2)
    best, _ = graph.search(queries, k=4, ef=64)
    graph._index = PartlyReachable(graph._index, reach=5)  # type: ignore[assignment]
    labels, scores = graph.search(queries, k=10, ef=64)
    assert labels.shape == scores.shape == (3, 10)
    assert (labels[:, :5] >= 0).all() and (labels[:, 5:] == -1).all()  # halved to 5 found
    assert np.isneginf(scores[:, 5:]).all() and (labels[:, :4] == best).all()


def test_graph_save_is_checksummed(tmp_path: Path) -> None:
    graph = HnswGraph.create("ip", 8, 50)
    data = _random(50, 8)
    graph.add(data, np.arange(50))
    path = tmp_path / "g.hnsw"
    digest = graph.save(path)
    assert not (tmp_path / "g.hnsw.tmp").exists()
    loaded = HnswGraph.load(path, "ip", 8, digest)
    np.testing.assert_array_equal(loaded.get_vectors(np.arange(50)), data)

    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "flipped.hnsw").write_bytes(bytes(raw))
    (tmp_path / "short.hnsw").write_bytes(path.read_bytes()[:-100])
    for name in ("flipped.hnsw", "short.hnsw"):
        with pytest.raises(GraphFileError, match="corrupt or truncated"):
            HnswGraph.load(tmp_path / name, "ip", 8, digest)
    with pytest.raises(GraphFileError, match="missing"):
        HnswGraph.load(tmp_path / "none.hnsw", "ip", 8, digest)


# -- Index ---------------------------------------------------------------------------------


def _build(root: Path, encoder: FakeEncoder, passages: list[Passage]) -> Path:
    out = root / "index"
    build_index(
        encoder, write_jsonl(root / "c.jsonl", passages), out, progress=False, say=lambda _: None
    )
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, FakeEncoder, list[Passage]]:
    encoder, passages = FakeEncoder(), make_passages(400)
    return _build(tmp_path_factory.mktemp("idx"), encoder, passages), encoder, passages


@pytest.fixture
def index(built: tuple[Path, FakeEncoder, list[Passage]]) -> Iterator[Index]:
    opened = Index.open(built[0], expected_fingerprint=built[1].fingerprint)
    yield opened
    opened.close()


def test_search_scores_equal_dot_products(
    index: Index, built: tuple[Path, FakeEncoder, list[Passage]]
) -> None:
    _, encoder, passages = built
    by_id = {p.id: p for p in passages}
    queries = encoder.encode(make_queries(passages, 5)).vectors
    results = index.search(queries, k=10, ef=64)
    assert [len(hits) for hits in results] == [10] * 5
    for query, hits in zip(queries, results, strict=True):
        passage_vectors = encoder.encode([by_id[h.id].encoder_input() for h in hits]).vectors
        np.testing.assert_allclose([h.score for h in hits], passage_vectors @ query, rtol=1e-5)
        assert [(h.title, h.text) for h in hits] == [
            (by_id[h.id].title, by_id[h.id].text) for h in hits
        ]
    bare = index.search(queries[:1], k=3, with_text=False)[0]
    # Without text a hit still carries its title (short, and what a result list shows).
    assert [(h.title, h.text) for h in bare] == [(by_id[h.id].title, None) for h in bare]
    assert [h.id for h in bare] == [h.id for h in results[0][:3]]


def test_exact_search_is_brute_force(
    index: Index, built: tuple[Path, FakeEncoder, list[Passage]]
) -> None:
    _, encoder, passages = built
    everything = encoder.encode([p.encoder_input() for p in passages]).vectors
    queries = encoder.encode(make_queries(passages, 8)).vectors
    expected = np.argsort(-(queries @ everything.T), axis=1, kind="stable")[:, :7]
    results = index.exact_search(queries, k=7)
    for row, hits in zip(expected, results, strict=True):
        assert [h.id for h in hits] == [passages[i].id for i in row]
    assert len(index.exact_search(queries[:1], k=1000)[0]) == 400  # k > count


def test_vectors_passages_and_params(
    index: Index, built: tuple[Path, FakeEncoder, list[Passage]]
) -> None:
    _, encoder, passages = built
    ids = [passages[5].id, passages[2].id]
    np.testing.assert_array_equal(
        index.get_vectors(ids),
        encoder.encode([passages[5].encoder_input(), passages[2].encoder_input()]).vectors,
    )
    with pytest.raises(KeyError, match="nope"):
        index.get_vectors(["nope"])
    assert index.get_passages([passages[1].id, "nope"]) == {passages[1].id: passages[1]}
    assert index.count == 400 and index.dim == encoder.dim
    assert index.params["space"] == "ip" and index.params["ef_search"] == DEFAULT_EF


def test_refuses_another_model_or_similarity(
    built: tuple[Path, FakeEncoder, list[Passage]],
) -> None:
    root = built[0]
    with pytest.raises(IndexMismatchError, match="built with another model"):
        Index.open(root, expected_fingerprint="other-model")
    with pytest.raises(IndexMismatchError, match="'dot' similarity, but the model uses 'cosine'"):
        Index.open(root, expected_similarity="cosine")


def test_refuses_space_unfit_for_similarity(
    built: tuple[Path, FakeEncoder, list[Passage]], tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(built[0], tmp_path / "copy"))
    manifest = json.loads((copy / MANIFEST_NAME).read_text())
    manifest["space"] = "cosine"
    (copy / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match=r"space 'cosine'.*needs 'ip'"):
        Index.open(copy)


def test_corrupt_graph_or_missing_manifest(
    built: tuple[Path, FakeEncoder, list[Passage]], tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(built[0], tmp_path / "copy"))
    graph = copy / GRAPH_NAME
    graph.write_bytes(graph.read_bytes()[:-64])
    with pytest.raises(IndexLoadError, match="corrupt or truncated"):
        Index.open(copy)
    (copy / MANIFEST_NAME).unlink()
    with pytest.raises(IndexLoadError, match="unfinished build"):
        Index.open(copy)
    with pytest.raises(IndexLoadError, match="not a bertdot index"):
        Index.open(tmp_path / "elsewhere")
    other = Path(shutil.copytree(built[0], tmp_path / "other"))
    (other / STORE_NAME).unlink()
    with pytest.raises(IndexLoadError, match=r"passage store passages\.sqlite is missing"):
        Index.open(other)
    assert not (other / STORE_NAME).exists()  # opening never creates an empty store


def test_store_of_another_build_refused(
    built: tuple[Path, FakeEncoder, list[Passage]], tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(built[0], tmp_path / "copy"))
    (tmp_path / "other").mkdir()
    other = _build(tmp_path / "other", built[1], make_passages(50, seed=3))
    shutil.copy(other / STORE_NAME, copy / STORE_NAME)
    with pytest.raises(IndexLoadError, match=r"graph holds 400 vectors .* store 50"):
        Index.open(copy)


def test_writes_newer_than_the_graph_are_replayed(
    built: tuple[Path, FakeEncoder, list[Passage]], tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(built[0], tmp_path / "copy"))
    _, encoder, passages = built
    first = Index.open(copy)
    fresh = Passage("new", None, "zebra quagga okapi")
    first.store.add([fresh], encoder.encode([fresh.text]).vectors)
    first.store.delete([passages[0].id])
    first.close()

    index = Index.open(copy)
    assert index.count == 400
    query = encoder.encode(["zebra quagga okapi"]).vectors
    assert index.search(query, k=1)[0][0].id == "new"
    own = encoder.encode([passages[0].encoder_input()]).vectors
    assert passages[0].id not in {h.id for h in index.search(own, k=20, ef=400)[0]}
    index.close()


def test_save_graph_checkpoints_replayed_writes(
    built: tuple[Path, FakeEncoder, list[Passage]], tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(built[0], tmp_path / "copy"))
    encoder = built[1]
    index = Index.open(copy)
    fresh = Passage("new", None, "zebra quagga okapi")
    index.store.add([fresh], encoder.encode([fresh.text]).vectors)
    index.close()
    index = Index.open(copy)  # replays the addition
    index.save_graph()
    index.close()
    manifest = IndexManifest.read(copy)
    assert (manifest.graph_file, manifest.graph_seq, manifest.count) == ("graph.401.hnsw", 401, 401)
    assert not (copy / GRAPH_NAME).exists()
    reopened = Index.open(copy)
    assert reopened.store.changes_since(manifest.graph_seq).labels.size == 0  # nothing to replay
    assert reopened.search(encoder.encode([fresh.text]).vectors, k=1)[0][0].id == "new"
    reopened.close()


def test_set_default_ef_persists(
    built: tuple[Path, FakeEncoder, list[Passage]], tmp_path: Path
) -> None:
    copy = Path(shutil.copytree(built[0], tmp_path / "copy"))
    index = Index.open(copy)
    index.set_default_ef(48)
    index.close()
    assert Index.open(copy).default_ef == 48


def test_cosine_model_scores_are_cosines(tmp_path: Path) -> None:
    encoder, passages = FakeEncoder(similarity="cosine"), make_passages(200)
    index = Index.open(_build(tmp_path, encoder, passages), expected_similarity="cosine")
    assert index.manifest.space == "cosine"
    query = encoder.encode(["w1 w2 w3"]).vectors
    hits = index.search(query, k=5)[0]
    by_id = {p.id: p for p in passages}
    vectors = encoder.encode([by_id[h.id].encoder_input() for h in hits]).vectors
    np.testing.assert_allclose([h.score for h in hits], vectors @ query[0], rtol=1e-5)
    assert all(-1.0 <= h.score <= 1.0 + 1e-6 for h in hits)
    index.close()


def test_recall_at_default_ef(tmp_path: Path) -> None:
    """HNSW against exact search on a few thousand passages, with keyword-style queries."""
    report = measure_recall(FakeEncoder(), make_passages(3000), tmp_path, efs=(16, DEFAULT_EF))
    assert report.recall[DEFAULT_EF] >= 0.99
    assert report.recall[16] < report.recall[DEFAULT_EF]  # the data is not trivially easy


# -- compact vectors (usearch) ---------------------------------------------------------------


@pytest.mark.parametrize("vectors", ["f16", "i8"])
@pytest.mark.parametrize("similarity", ["dot", "cosine"])
def test_compact_vectors_answer_exact_scores_at_the_recall_of_float32(
    vectors: str, similarity: str, tmp_path: Path
) -> None:
    """A compact graph's candidates are rescored with the store's float32 vectors: the scores
    callers see are the model's own, and recall against exact search holds."""
    encoder = FakeEncoder(dim=256, similarity=similarity)
    passages = make_passages(3000)
    out = tmp_path / "index"
    corpus = write_jsonl(tmp_path / "c.jsonl", passages)
    manifest = build_index(
        encoder, corpus, out, progress=False, vectors=vectors, say=lambda _: None
    )
    assert manifest.vectors == vectors and manifest.graph_file == "graph.usearch"
    float32 = tmp_path / "f32"
    build_index(encoder, corpus, float32, progress=False, say=lambda _: None)
    queries = encoder.encode(make_queries(passages, 60, seed=2)).vectors

    def recall(index: Index) -> float:
        approximate = index.search(queries, k=10, ef=256)
        exact = index.exact_search(queries, k=10)
        pairs = zip(approximate, exact, strict=True)
        return float(np.mean([len({h.id for h in a} & {h.id for h in e}) for a, e in pairs])) / 10

    reference = Index.open(float32)
    try:
        float32_recall = recall(reference)
    finally:
        reference.close()
    index = Index.open(out, expected_fingerprint=encoder.fingerprint)
    try:
        assert index.graph.compact and index.count == 3000
        by_id = {p.id: p for p in passages}
        assert recall(index) >= min(float32_recall - 0.02, 0.99)  # at float32's recall or 0.99
        approximate = index.search(queries, k=10, ef=256)
        for query, hits in zip(queries, approximate, strict=True):
            stored = encoder.encode([by_id[h.id].encoder_input() for h in hits]).vectors
            np.testing.assert_allclose([h.score for h in hits], stored @ query, rtol=1e-5)
        ids = [passages[7].id, passages[3].id]  # exact vectors, as Rerank by id scores them
        np.testing.assert_allclose(
            index.get_vectors(ids),
            encoder.encode([passages[7].encoder_input(), passages[3].encoder_input()]).vectors,
            rtol=1e-6,
        )
    finally:
        index.close()
    smaller = (out / "graph.usearch").stat().st_size / (float32 / "graph.hnsw").stat().st_size
    assert smaller < {"f16": 0.75, "i8": 0.55}[vectors]  # 256 dims: the vectors dominate
    # A float32 manifest leaves the field out, so releases from before compact vectors
    # (which refuse unknown fields) still open it; a compact one names its kind.
    assert "vectors" not in json.loads((float32 / "manifest.json").read_text())
    assert IndexManifest.read(float32).vectors == "f32"
    assert json.loads((out / "manifest.json").read_text())["vectors"] == vectors


@pytest.mark.parametrize("vectors", ["f16", "i8"])
def test_compact_graphs_replay_save_and_rebuild(vectors: str, tmp_path: Path) -> None:
    encoder, passages = FakeEncoder(), make_passages(300)
    out = tmp_path / "index"
    build_index(encoder, write_jsonl(tmp_path / "c.jsonl", passages), out, progress=False,
                vectors=vectors, say=lambda _: None)  # fmt: skip
    index = Index.open(out, writer=True)
    fresh = Passage("new", None, "zebra quagga okapi")
    index.upsert([fresh], encoder.encode([fresh.text]).vectors)
    index.delete([passages[0].id, passages[1].id])
    index.upsert(
        [Passage(passages[2].id, None, "okapi giraffe")], encoder.encode(["okapi giraffe"]).vectors
    )
    index.close()  # not saved: the next open replays the three writes from the store
    index = Index.open(out, writer=True)
    assert index.count == 299 and index.pending_writes > 0
    assert index.search(encoder.encode([fresh.text]).vectors, k=1)[0][0].id == "new"
    own = encoder.encode([passages[0].encoder_input()]).vectors
    assert passages[0].id not in {h.id for h in index.search(own, k=50, ef=300)[0]}
    replaced = index.search(encoder.encode(["okapi giraffe"]).vectors, k=1)[0][0]
    assert (replaced.id, replaced.text) == (passages[2].id, "okapi giraffe")
    index.save_graph()
    index.close()
    manifest = IndexManifest.read(out)
    assert manifest.graph_file == f"graph.{manifest.graph_seq}.usearch" and manifest.count == 299
    (out / manifest.graph_file).write_bytes(b"damaged")
    with pytest.raises(IndexLoadError, match="repair"):
        Index.open(out)
    rebuilt = Index.open(out, writer=True, rebuild_graph=True)
    try:
        assert rebuilt.rebuilt and rebuilt.count == 299 and rebuilt.graph.compact
        assert rebuilt.search(encoder.encode([fresh.text]).vectors, k=1)[0][0].id == "new"
    finally:
        rebuilt.close()
