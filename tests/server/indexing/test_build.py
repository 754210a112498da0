"""`build_index` and `bertdot index build`: manifest, refusals, bad corpora, resume after kill."""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from bertdot.server.index.corpus import CorpusError, Passage
from bertdot.server.index.graph import sha256_file
from bertdot.server.index.index import GRAPH_NAME, MANIFEST_NAME, STORE_NAME, Index, IndexManifest
from bertdot.server.indexing import build as build_module
from bertdot.server.indexing import commands as index_cli
from bertdot.server.indexing.build import BuildError, MemoryEstimate, build_index
from tests.support.fakes import FakeEncoded, FakeEncoder, make_passages, write_jsonl, write_tsv

REPO = Path(__file__).resolve().parents[3]


def _quiet_build(encoder: FakeEncoder, corpus: Path, out: Path, **kw: object) -> IndexManifest:
    return build_index(encoder, corpus, out, progress=False, say=lambda _: None, **kw)


def _rows(out: Path) -> list[tuple]:
    """Everything a build stored, in label order (the vector as its bytes)."""
    with sqlite3.connect(out / STORE_NAME) as conn:
        return conn.execute(
            "SELECT label, id, title, text, vector FROM passages ORDER BY label"
        ).fetchall()


def test_build_writes_store_graph_and_manifest(tmp_path: Path) -> None:
    passages = make_passages(150)
    messages: list[str] = []
    manifest = build_index(
        FakeEncoder(dim=24),
        write_jsonl(tmp_path / "c.jsonl", passages),
        tmp_path / "idx",
        M=8,
        ef_construction=50,
        batch_size=16,
        progress=False,
        say=messages.append,
    )
    assert "MiB of RAM" in messages[0]  # the memory bill comes before any work
    assert (manifest.count, manifest.dim, manifest.M, manifest.ef_construction) == (150, 24, 8, 50)
    assert manifest.fingerprint == FakeEncoder(dim=24).fingerprint
    assert manifest.space == "ip" and manifest.graph_seq == 150
    assert manifest.graph_sha256 == sha256_file(tmp_path / "idx" / GRAPH_NAME)
    assert IndexManifest.read(tmp_path / "idx") == manifest
    assert [r[1:4] for r in _rows(tmp_path / "idx")] == [(p.id, p.title, p.text) for p in passages]


def test_gzip_tsv_corpus_and_truncation_count(tmp_path: Path) -> None:
    passages = [*make_passages(20, titled=False), Passage("long", None, "word " * 100)]
    corpus = write_tsv(tmp_path / "collection.tsv.gz", passages, gz=True)
    manifest = _quiet_build(FakeEncoder(max_length=64), corpus, tmp_path / "idx")
    assert manifest.count == 21
    assert manifest.extra["truncated"] == 1


def test_existing_output_refused_without_resume(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", make_passages(10))
    (tmp_path / "idx").mkdir()
    (tmp_path / "idx" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty; pass --resume"):
        _quiet_build(FakeEncoder(), corpus, tmp_path / "idx")
    assert (tmp_path / "idx" / "keep.txt").read_text() == "mine"


def test_resume_of_a_complete_index_encodes_nothing(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", make_passages(10))
    first = _quiet_build(FakeEncoder(), corpus, tmp_path / "idx")
    encoder = FakeEncoder()
    assert _quiet_build(encoder, corpus, tmp_path / "idx", resume=True) == first
    assert encoder.encoded == 0


@pytest.mark.parametrize("batch_size", [4, 64])  # duplicate in a later batch / the same batch
def test_duplicate_ids_name_both_lines(tmp_path: Path, batch_size: int) -> None:
    passages = make_passages(10)
    passages[8] = Passage(passages[2].id, None, "again")
    corpus = write_jsonl(tmp_path / "c.jsonl", passages)
    with pytest.raises(CorpusError) as caught:
        _quiet_build(FakeEncoder(), corpus, tmp_path / "idx", batch_size=batch_size)
    assert str(caught.value) == f"{corpus}:9: duplicate passage id 'p2' (first seen on line 3)"


def test_bad_line_stops_the_build_without_a_manifest(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "c.jsonl", make_passages(10))
    with corpus.open("a") as handle:
        handle.write('{"_id": "x", "text": ""}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:11: empty text for passage 'x'"):
        _quiet_build(FakeEncoder(), corpus, tmp_path / "idx")
    assert not (tmp_path / "idx" / MANIFEST_NAME).exists()


def test_empty_corpus_and_bad_encoder_output_refused(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(BuildError, match="holds no passages"):
        _quiet_build(FakeEncoder(), tmp_path / "empty.jsonl", tmp_path / "a")

    class NaNEncoder(FakeEncoder):
        def encode(self, texts: Sequence[str], batch_size: int | None = None) -> FakeEncoded:
            out = super().encode(texts)
            out.vectors[0, 0] = np.nan
            return out

    corpus = write_jsonl(tmp_path / "c.jsonl", make_passages(5))
    with pytest.raises(BuildError, match=r"c.jsonl:1-5: .*non-finite"):
        _quiet_build(NaNEncoder(), corpus, tmp_path / "b")


class _Interrupt(Exception):
    pass


class _DiesAfter(FakeEncoder):
    """Raises on its n-th call, as a build interrupted mid-way would stop."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls_left = calls

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> FakeEncoded:
        self.calls_left -= 1
        if self.calls_left < 0:
            raise _Interrupt
        return super().encode(texts)


def test_resume_refuses_another_model_or_a_changed_corpus(tmp_path: Path) -> None:
    passages = make_passages(40)
    corpus = write_jsonl(tmp_path / "c.jsonl", passages)
    with pytest.raises(_Interrupt):
        _quiet_build(_DiesAfter(2), corpus, tmp_path / "idx", batch_size=10)
    with pytest.raises(BuildError, match="fingerprint=fake-dot-32-0, this build has fake-dot-32-7"):
        _quiet_build(FakeEncoder(seed=7), corpus, tmp_path / "idx", resume=True)
    passages[19] = Passage("x19", passages[19].title, passages[19].text)  # same size
    write_jsonl(corpus, passages)
    with pytest.raises(BuildError, match=r"changed since the interrupted build.*'x19'"):
        _quiet_build(FakeEncoder(), corpus, tmp_path / "idx", resume=True)
    write_jsonl(corpus, passages[:-1])
    with pytest.raises(BuildError, match="started with corpus_bytes="):
        _quiet_build(FakeEncoder(), corpus, tmp_path / "idx", resume=True)


_KILLABLE_BUILD = """
import sys
from bertdot.server.indexing.build import build_index
from tests.support.fakes import FakeEncoder
build_index(FakeEncoder(delay=0.03), sys.argv[1], sys.argv[2], batch_size=20,
            progress=False, say=lambda _: None)
"""


def _stored_count(out: Path) -> int:
    try:
        with sqlite3.connect(f"file:{out / STORE_NAME}?mode=ro", uri=True) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0


def test_killed_build_resumes_to_the_same_index(tmp_path: Path) -> None:
    passages = make_passages(600)
    corpus = write_jsonl(tmp_path / "c.jsonl", passages)
    _quiet_build(FakeEncoder(), corpus, tmp_path / "whole", batch_size=20)

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLABLE_BUILD, str(corpus), str(out)], cwd=REPO
    )
    deadline = time.monotonic() + 30
    while _stored_count(out) < 100 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the build ended before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    done = _stored_count(out)
    assert 100 <= done < 600 and done % 20 == 0  # whole batches only
    assert not (out / MANIFEST_NAME).exists()

    encoder = FakeEncoder()
    manifest = _quiet_build(encoder, corpus, out, batch_size=20, resume=True)
    assert encoder.encoded == 600 - done  # nothing encoded twice
    assert manifest.count == 600
    assert _rows(out) == _rows(tmp_path / "whole")
    index = Index.open(out, expected_fingerprint=encoder.fingerprint)
    query = encoder.encode([passages[123].text]).vectors
    assert index.search(query, k=1)[0][0].id == passages[123].id
    index.close()


def test_memory_estimate_for_msmarco() -> None:
    estimate = MemoryEstimate.of(8_841_823, 768, 16, corpus_bytes=3_000_000_000)
    assert estimate.vectors_bytes == 8_841_823 * 768 * 4  # ~25.3 GiB
    assert 1.0 < estimate.graph_bytes / 2**30 < 3.0
    assert "~27.3 GiB of RAM (vectors 25.3 GiB + graph 2.0 GiB)" in estimate.describe()


# -- CLI -------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bertdot")
    index_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_default_links_follow_the_corpus_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No M asked for: 16 for a small corpus, 32 from LARGE_INDEX passages (said before the
    work); an M asked for is kept whatever the size."""
    assert (build_module.default_m(249_999), build_module.default_m(250_000)) == (16, 32)
    corpus = write_jsonl(tmp_path / "c.jsonl", make_passages(40))
    assert _quiet_build(FakeEncoder(dim=8), corpus, tmp_path / "small").M == 16

    monkeypatch.setattr(build_module, "LARGE_INDEX", 40)
    messages: list[str] = []
    large = build_index(FakeEncoder(dim=8), corpus, tmp_path / "large", progress=False,
                        say=messages.append)  # fmt: skip
    assert large.M == 32 and IndexManifest.read(tmp_path / "large").M == 32
    assert messages[0].startswith("HNSW M=32: the default from 40 passages")
    assert _quiet_build(FakeEncoder(dim=8), corpus, tmp_path / "asked", M=12).M == 12


def test_cli_build_and_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seen: list[argparse.Namespace] = []

    def fake_encoder(args: argparse.Namespace) -> FakeEncoder:
        seen.append(args)
        return FakeEncoder()

    monkeypatch.setattr(index_cli, "_encoder", fake_encoder)
    corpus = write_tsv(tmp_path / "c.tsv", make_passages(30))
    argv = ["index", "build", "--model", "m", "--corpus", str(corpus), "--out", str(tmp_path / "i")]
    assert _cli([*argv, "--m", "8", "--ef-construction", "40", "--no-progress"]) == 0
    assert IndexManifest.read(tmp_path / "i").M == 8
    assert seen[0].threads == 0 and seen[0].device == "auto"

    capsys.readouterr()
    assert _cli(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bertdot index build: error: ") and "--resume" in err
    assert err.count("\n") == 1

    corpus.write_text("0\tfine\n1\n")
    assert _cli([*argv[:-1], str(tmp_path / "j")]) == 2
    assert f"{corpus}:2: expected 2 tab-separated columns" in capsys.readouterr().err
