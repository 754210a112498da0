"""CUDA graph buckets: the shapes, the padding, and the replayer's buffers and bindings.

The replayer runs here on a plain CPU session: the same padding, bound buffers, in-place
updates and slicing as on a GPU, where only the session's `enable_cuda_graph` differs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from bertdot.server.encoding import encoder as encoder_module
from bertdot.server.encoding.artifact import load_manifest
from bertdot.server.encoding.cuda_graphs import (
    Bucket,
    GraphReplayer,
    buckets_for,
    pad_to,
    smallest_bucket,
)
from bertdot.server.encoding.encoder import Encoder
from bertdot.server.encoding.runtime import open_session
from bertdot.server.encoding.tokenization import Batch, TextTokenizer

TEXTS = [
    "what is the boiling point of water",
    "dense retrieval",
    "a much longer query about the history of the printing press in europe and asia",
]


def test_buckets_cover_every_batch_up_to_the_limits() -> None:
    buckets = buckets_for(24, 512)
    assert {b.rows for b in buckets} == {1, 2, 4, 8, 16, 24}
    assert {b.tokens for b in buckets} == {16, 32, 64, 128}
    assert smallest_bucket(buckets, 3, 20) == Bucket(4, 32)
    assert smallest_bucket(buckets, 17, 128) == Bucket(24, 128)
    assert smallest_bucket(buckets, 1, 1) == Bucket(1, 16)
    assert smallest_bucket(buckets, 25, 10) is None
    assert smallest_bucket(buckets, 1, 129) is None
    short_model = buckets_for(32, 48)
    assert {b.tokens for b in short_model} == {16, 32, 48}


def test_padding_masks_every_added_token_and_keeps_padded_rows_non_empty(
    tiny_artifact: Path,
) -> None:
    tokenizer = TextTokenizer(tiny_artifact / "tokenizer.json", 512)
    batch = tokenizer.pad(tokenizer.tokenize(TEXTS))
    rows, tokens = batch.shape
    padded = pad_to(batch, Bucket(4, 32), tokenizer.pad_id)
    assert padded.shape == (4, 32)
    np.testing.assert_array_equal(padded.input_ids[:rows, :tokens], batch.input_ids)
    np.testing.assert_array_equal(padded.attention_mask[:rows, :tokens], batch.attention_mask)
    assert not padded.attention_mask[:rows, tokens:].any()
    assert (padded.input_ids[:rows, tokens:] == tokenizer.pad_id).all()
    assert padded.attention_mask[rows:].sum(axis=1).tolist() == [1]


def _plain_hidden(session: ort.InferenceSession, batch: Batch) -> np.ndarray:
    names = [i.name for i in session.get_inputs()]
    return np.asarray(session.run(None, batch.feeds(names))[0])


@pytest.mark.parametrize("artifact_fixture", ["tiny_artifact", "tiny_bert_artifact"])
def test_a_replayed_bucket_gives_each_text_the_vector_of_its_unpadded_batch(
    artifact_fixture: str, request: pytest.FixtureRequest
) -> None:
    root = request.getfixturevalue(artifact_fixture)
    manifest = load_manifest(root)
    plain = open_session(root, manifest, device="cpu", precision="fp32").session
    separate = open_session(root, manifest, device="cpu", precision="fp32").session
    tokenizer = TextTokenizer(root / "tokenizer.json", manifest.max_length)
    replayer = GraphReplayer(
        separate, buckets_for(4, 64), dim=manifest.dim, pad_id=tokenizer.pad_id, device="cpu"
    )
    replayer.capture(tokenizer.tokenize([" ".join(["warm"] * 80)])[0].ids)
    # Each call writes new inputs into the same bound buffers: every batch must get its own
    # answer, not the captured one or the previous call's.
    for texts in (TEXTS, TEXTS[:1], TEXTS[1:2], list(reversed(TEXTS))):
        batch = tokenizer.pad(tokenizer.tokenize(texts))
        got = replayer.run(batch)
        assert got is not None
        want = _plain_hidden(plain, batch)
        assert got.shape == want.shape
        mask = batch.attention_mask.astype(bool)
        np.testing.assert_allclose(got[:, 0, :], want[:, 0, :], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(got[mask], want[mask], rtol=1e-4, atol=1e-4)


def _cpu_replayer(
    root: Path, max_rows: int, max_tokens: int
) -> tuple[GraphReplayer, ort.InferenceSession, TextTokenizer]:
    """A replayer over a plain fp32 CPU session, that session, and the artifact's tokenizer."""
    manifest = load_manifest(root)
    session = open_session(root, manifest, device="cpu", precision="fp32").session
    tokenizer = TextTokenizer(root / "tokenizer.json", manifest.max_length)
    buckets = buckets_for(max_rows, max_tokens)
    replayer = GraphReplayer(
        session, buckets, dim=manifest.dim, pad_id=tokenizer.pad_id, device="cpu"
    )
    return replayer, session, tokenizer


def test_a_batch_beyond_every_bucket_is_left_to_the_plain_session(tiny_artifact: Path) -> None:
    replayer, _, tokenizer = _cpu_replayer(tiny_artifact, 2, 16)
    assert replayer.run(tokenizer.pad(tokenizer.tokenize(TEXTS))) is None  # 3 rows > 2
    assert replayer.run(tokenizer.pad(tokenizer.tokenize(TEXTS[2:]))) is None  # > 16 tokens
    assert replayer.run(tokenizer.pad(tokenizer.tokenize(TEXTS[:2]))) is not None


def test_check_compares_replays_with_the_plain_session(tiny_artifact: Path) -> None:
    replayer, session, tokenizer = _cpu_replayer(tiny_artifact, 2, 32)
    manifest = load_manifest(tiny_artifact)
    ids = tokenizer.tokenize([" ".join(["warm"] * 40)])[0].ids
    assert replayer.check(ids, session) > 0.99999
    int8 = open_session(tiny_artifact, manifest, device="cpu", precision="int8").session
    # Against a different model file the check must see the difference.
    assert replayer.check(ids, int8) < 0.99999


def test_an_encoder_whose_capture_fails_runs_without_graphs(
    tiny_artifact: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_: object) -> object:
        raise RuntimeError("This session cannot use the CUDA Graph feature\nmore detail")

    monkeypatch.setattr(encoder_module, "open_graph_session", refuse)
    encoder = Encoder(tiny_artifact, device="cpu")
    assert encoder.graph_buckets == 0 and encoder.graphs_note == ""  # CPU: never tried
    manifest = load_manifest(tiny_artifact)
    choice = open_session(tiny_artifact, manifest, device="cpu")
    graphs, note = encoder._capture_graphs(choice)
    assert graphs is None
    assert note == "CUDA graphs off: RuntimeError This session cannot use the CUDA Graph feature"


def test_serve_turns_graphs_off_by_flag_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from bertdot.cli.main import build_parser
    from bertdot.server.app.commands import config_from

    assert config_from(build_parser().parse_args(["serve", "--model", "m"])).cuda_graphs
    flags = ["serve", "--model", "m", "--no-cuda-graphs"]
    assert not config_from(build_parser().parse_args(flags)).cuda_graphs
    monkeypatch.setenv("BERTDOT_NO_CUDA_GRAPHS", "1")
    assert not config_from(build_parser().parse_args(["serve", "--model", "m"])).cuda_graphs
