"""`bertdot search`: the ranked table, JSON, one-line errors; against the fake and a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bertdot.cli.main import main
from bertdot.client.search_view import render, shorten
from bertdot.client.types import Hit, SearchResult, Timings
from bertdot.server.app.config import ServerConfig
from tests.support import fake_server
from tests.support.serving import serving


@pytest.fixture
def target() -> Iterator[str]:
    server, port, _ = fake_server.start()
    yield f"127.0.0.1:{port}"
    server.stop(None)


def search(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["search", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_prints_ranked_hits_and_footer(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = search(capsys, "what is dense retrieval", "--target", target, "--k", "3")
    assert code == 0
    rows = out.splitlines()[:3]
    assert rows == [
        "1  23.000  p0  title 0 — text 0",
        "2  22.000  p1  title 1 — text 1",
        "3  21.000  p2  title 2 — text 2",
    ]
    assert "query: 6 tokens · server 0.01 ms" in out and "truncated" not in out


def test_ef_no_text_and_env_target(
    target: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BERTDOT_TARGET", target)
    code, out, _ = search(capsys, "q", "--k", "2", "--ef", "250", "--no-text")
    assert code == 0
    assert out.splitlines()[0] == "1  1.000  p0  title 0"  # no text asked, none shown
    assert "encode 0.25" in out  # the fake echoes ef as encode_us: it reached the wire


def test_json_output(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = search(capsys, "two words", "--target", target, "--k", "2", "--json")
    data = json.loads(out)
    assert code == 0
    assert [(h["rank"], h["id"], h["text"]) for h in data["hits"]] == [
        (1, "p0", "text 0"),
        (2, "p1", "text 1"),
    ]
    assert data["token_count"] == 4 and data["truncated"] is False
    assert data["timings"]["total_us"] == 9


def test_grpc_errors_are_one_line_and_non_zero(
    target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = search(capsys, "", "--target", target)
    assert code == 1 and out == ""
    assert err == "bertdot search: INVALID_ARGUMENT: empty query\n"
    code, _, err = search(capsys, "q", "--target", "127.0.0.1:1", "--timeout", "2")
    assert code == 1 and err.startswith("bertdot search: UNAVAILABLE: ")
    assert err.count("\n") == 1


def test_long_texts_fit_the_terminal() -> None:
    hit = Hit("passage-with-a-rather-long-identifier-0001", 101.5, "A title", "word " * 200)
    result = SearchResult("", (hit, Hit("p2", 99.0)), 40, True, Timings(10, 20, 3000, 400, 3500, 4))
    lines = render(result, width=60).splitlines()
    assert all(len(line) <= 60 for line in lines[:2])
    assert lines[0].endswith("…") and "passage-with-a-rather-l…" in lines[0]
    assert lines[1].split() == ["2", "99.000", "p2"]
    assert lines[-1] == (
        "query: 40 tokens (truncated to the model's max length) · server 3.50 ms: "
        "queue 0.01, tokenize 0.02, encode 3.00, search 0.40, batch of 4"
    )
    assert shorten("a\n b   c", 10) == "a b c" and shorten("abcdef", 4) == "abc…"


def test_real_server_without_index_is_a_failed_precondition(
    tiny_artifact: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ServerConfig(model=tiny_artifact, port=0, metrics_port=None, device="cpu")
    with serving(config) as server:
        code, out, err = search(capsys, "what is dense retrieval", "--target", server.target)
    assert code == 1 and out == ""
    assert err.startswith("bertdot search: FAILED_PRECONDITION: ") and err.count("\n") == 1


def test_real_server_with_index(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from bertdot.server.encoding.encoder import Encoder
    from bertdot.server.indexing.build import build_index

    corpus = tmp_path / "corpus.jsonl"
    passages = [
        {"_id": f"d{i}", "title": f"doc {i}", "text": f"passage number {i} about topic {i % 3}"}
        for i in range(30)
    ]
    corpus.write_text("".join(json.dumps(p) + "\n" for p in passages), encoding="utf-8")
    index = tmp_path / "index"
    encoder = Encoder(tiny_artifact, device="cpu")
    build_index(encoder, corpus, index, progress=False, say=lambda _: None)
    config = ServerConfig(model=tiny_artifact, index=index, port=0, device="cpu")
    with serving(config) as server:
        code, out, _ = search(capsys, "topic 1", "--target", server.target, "--k", "5", "--json")
    data = json.loads(out)
    assert code == 0 and len(data["hits"]) == 5
    assert all(h["id"].startswith("d") and h["text"].startswith("passage") for h in data["hits"])
    scores = [h["score"] for h in data["hits"]]
    assert scores == sorted(scores, reverse=True)
    assert data["token_count"] > 2 and data["timings"]["encode_us"] > 0
