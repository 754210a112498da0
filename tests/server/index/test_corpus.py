"""Corpus readers: both formats, gzip by magic bytes, and every bad input named by file:line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bertdot.server.index.corpus import (
    CorpusError,
    Passage,
    detect_format,
    measure,
    read_corpus,
)


def _write(path: Path, content: str | bytes, *, gz: bool = False) -> Path:
    data = content.encode("utf-8") if isinstance(content, str) else content
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _read(path: Path) -> list[tuple[int, Passage]]:
    return [(r.line, r.passage) for r in read_corpus(path)]


def test_jsonl_fields_titles_and_blank_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "corpus.jsonl",
        "\ufeff"  # a byte-order mark some tools write
        '{"_id": "a", "title": "T", "text": "alpha"}\n'
        "\n"
        '{"_id": 7, "text": "beta"}\r\n'
        '{"id": "c", "title": "", "text": "gamma", "metadata": {}}',
    )
    assert _read(path) == [
        (1, Passage("a", "T", "alpha")),
        (3, Passage("7", None, "beta")),
        (4, Passage("c", None, "gamma")),
    ]
    assert Passage("a", "T", "alpha").encoder_input() == "T alpha"
    assert Passage("b", None, "beta").encoder_input() == "beta"


def test_tsv_msmarco_layout(tmp_path: Path) -> None:
    path = _write(tmp_path / "collection.tsv", "0\tThe presence of\n1\tcommunication amid\n")
    assert _read(path) == [
        (1, Passage("0", None, "The presence of")),
        (2, Passage("1", None, "communication amid")),
    ]


@pytest.mark.parametrize("name", ["corpus.jsonl.gz", "corpus.jsonl"])
def test_gzip_detected_by_magic_bytes_not_suffix(tmp_path: Path, name: str) -> None:
    path = _write(tmp_path / name, '{"_id": "a", "text": "x"}\n', gz=True)
    assert _read(path) == [(1, Passage("a", None, "x"))]


def test_gzip_tsv(tmp_path: Path) -> None:
    path = _write(tmp_path / "collection.tsv.gz", "9\tnine\n", gz=True)
    assert detect_format(path) == "tsv"
    assert _read(path) == [(1, Passage("9", None, "nine"))]


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.tsv", "tsv"), ("a.TSV.gz", "tsv"), ("a.jsonl", "jsonl"), ("a.jsonl.gz", "jsonl")],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(name) == fmt


def test_measure_counts_lines_and_uncompressed_bytes(tmp_path: Path) -> None:
    text = "0\ta\n1\tb\n2\tc"  # no final newline: the last line still counts
    assert measure(_write(tmp_path / "c.tsv", text)) == measure(
        _write(tmp_path / "c.tsv.gz", text, gz=True)
    )
    size = measure(tmp_path / "c.tsv")
    assert (size.lines, size.bytes) == (3, len(text))


GOOD = '{"_id": "ok", "text": "fine"}\n'


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"_id": "x", "text": "unterminated}', "malformed JSON"),
        ('["_id", "text"]', "expected a JSON object"),
        ('{"text": "no id"}', "missing passage id"),
        ('{"_id": null, "text": "null id"}', "missing passage id"),
        ('{"_id": "  ", "text": "blank id"}', "empty passage id"),
        ('{"_id": "x"}', "missing passage text"),
        ('{"_id": "x", "text": 5}', "missing passage text"),
        ('{"_id": "x", "text": "  "}', "empty text"),
        ('{"_id": "x", "title": 3, "text": "t"}', "'title' must be a string"),
    ],
)
def test_bad_jsonl_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    path = _write(tmp_path / "bad.jsonl", GOOD + "\n" + line + "\n" + GOOD)
    with pytest.raises(CorpusError) as caught:
        list(read_corpus(path))
    assert caught.value.line == 3
    assert str(caught.value).startswith(f"{path}:3: ")
    assert problem in str(caught.value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("only-an-id", "found 1"),
        ("1\ttext\textra", "found 3"),
        ("\ttext", "empty passage id"),
        ("1\t ", "empty text"),
    ],
)
def test_bad_tsv_lines(tmp_path: Path, line: str, problem: str) -> None:
    path = _write(tmp_path / "bad.tsv", f"0\tgood\n{line}\n")
    with pytest.raises(CorpusError, match=f"bad.tsv:2: .*{problem}"):
        list(read_corpus(path))


@pytest.mark.parametrize("gz", [False, True])
def test_invalid_utf8_names_line(tmp_path: Path, gz: bool) -> None:
    path = _write(tmp_path / "bad.jsonl", GOOD.encode() + b'{"_id": "x", "text": "\xff"}\n', gz=gz)
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: invalid UTF-8"):
        list(read_corpus(path))


def test_records_before_an_error_are_yielded(tmp_path: Path) -> None:
    """Streaming: a build has already seen (and can report) the good lines."""
    path = _write(tmp_path / "c.jsonl", GOOD + "{oops\n")
    reader = read_corpus(path)
    assert next(reader).passage.id == "ok"
    with pytest.raises(CorpusError):
        next(reader)


texts = st.text(min_size=1).filter(lambda t: t.strip() != "")
ids = texts  # st.text never yields lone surrogates, which UTF-8 cannot encode


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(ids, texts), min_size=1, max_size=5))
def test_jsonl_round_trip_any_text(tmp_path_factory: pytest.TempPathFactory, rows: list) -> None:
    """Whatever a text holds (tabs, \\r, U+2028, emoji), JSON escaping keeps it on one line and
    the reader gives it back unchanged."""
    path = tmp_path_factory.mktemp("rt") / "c.jsonl"
    body = "".join(json.dumps({"_id": i, "text": t}, ensure_ascii=False) + "\n" for i, t in rows)
    _write(path, body)
    assert [(p.id, p.text) for _, p in _read(path)] == rows
