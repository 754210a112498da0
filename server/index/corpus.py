"""Streaming corpus readers: BEIR-style JSONL and MS MARCO-style TSV, plain or gzip.

Every malformed record is an error naming the file and line; nothing is dropped silently.
The only lines skipped are blank ones (they hold no record). Duplicate ids cannot be seen
by a streaming reader without holding every id in memory; the passage store detects them
during the build (see `bertdot.server.indexing.build`).
"""

from __future__ import annotations

import gzip
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, cast

GZIP_MAGIC = b"\x1f\x8b"
CorpusFormat = Literal["jsonl", "tsv"]


class CorpusError(ValueError):
    """A corpus record is malformed; the message names the file and the line."""

    def __init__(self, path: str | Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = str(path)
        self.line = line
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Passage:
    id: str
    title: str | None
    text: str

    def encoder_input(self) -> str:
        """What the encoder reads: the title (if any) then the text, as BEIR evaluations do."""
        return f"{self.title} {self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Record:
    """A passage with where it came from (1-based line number)."""

    line: int
    passage: Passage


def open_binary(path: str | Path) -> IO[bytes]:
    """Open plain or gzip-compressed files alike; gzip is detected by its magic bytes."""
    with open(path, "rb") as probe:
        compressed = probe.read(2) == GZIP_MAGIC
    if compressed:
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb")


def detect_format(path: str | Path) -> CorpusFormat:
    """`.tsv` (before an optional `.gz`) means TSV; anything else is read as JSONL."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    return "tsv" if suffixes and suffixes[-1] in (".tsv", ".tab") else "jsonl"


@dataclass(frozen=True)
class CorpusSize:
    lines: int
    bytes: int  # uncompressed


def measure(path: str | Path) -> CorpusSize:
    """Lines and uncompressed bytes, counted in blocks without decoding: a fast size taken
    before a build to estimate its memory."""
    lines = size = 0
    last = b"\n"
    with open_binary(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            lines += block.count(b"\n")
            size += len(block)
            last = block[-1:]
    return CorpusSize(lines + (last != b"\n"), size)


def read_corpus(path: str | Path, fmt: CorpusFormat | None = None) -> Iterator[Record]:
    """Yield every passage of `path` in file order, raising `CorpusError` at the first bad line."""
    parse = _parse_tsv if (fmt or detect_format(path)) == "tsv" else _parse_jsonl
    with open_binary(path) as handle:
        yield from _records(path, handle, parse, 1)


def read_corpus_part(
    path: str | Path, offset: int, first_line: int, lines: int
) -> Iterator[Record]:
    """The passages of `lines` lines of a plain (uncompressed) corpus, from byte `offset`,
    whose first line is line `first_line` of the file: what one encoding task reads."""
    parse = _parse_tsv if detect_format(path) == "tsv" else _parse_jsonl
    with open(path, "rb") as handle:
        handle.seek(offset)
        yield from _records(path, itertools.islice(handle, lines), parse, first_line)


def _records(
    path: str | Path, raw_lines: Iterable[bytes], parse: Callable[[str], Passage], first: int
) -> Iterator[Record]:
    for number, raw in enumerate(raw_lines, start=first):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CorpusError(path, number, f"invalid UTF-8 at byte {exc.start}") from exc
        if number == 1:
            line = line.removeprefix("\ufeff")
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        try:
            yield Record(number, parse(line))
        except ValueError as exc:
            raise CorpusError(path, number, str(exc)) from exc


def _parse_jsonl(line: str) -> Passage:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"malformed JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    raw_id = obj.get("_id", obj.get("id"))
    if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
        raise ValueError("missing passage id ('_id' must be a string or an integer)")
    title = obj.get("title")
    if title is not None and not isinstance(title, str):
        raise ValueError("'title' must be a string")
    text = obj.get("text")
    if not isinstance(text, str):
        raise ValueError("missing passage text ('text' must be a string)")
    return _passage(str(raw_id), title or None, text)


def _parse_tsv(line: str) -> Passage:
    columns = line.split("\t")
    if len(columns) != 2:
        raise ValueError(f"expected 2 tab-separated columns (id, text), found {len(columns)}")
    return _passage(columns[0], None, columns[1])


def _passage(pid: str, title: str | None, text: str) -> Passage:
    if not pid.strip():
        raise ValueError("empty passage id")
    if not text.strip():
        raise ValueError(f"empty text for passage {pid!r}")
    return Passage(pid, title, text)
