"""`bertdot demo` end to end on the tiny model and a small slice of the built-in corpus."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bertdot.client import Client
from bertdot.server.indexing.builtin_corpus import passages
from tests.support.models import MINILM_DIR


def test_builtin_corpus_is_real_text_of_a_few_thousand_passages() -> None:
    records = list(passages())
    assert 2000 <= len(records) <= 10000
    assert len({r["_id"] for r in records}) == len(records)
    lengths = sorted(len(r["text"].split()) for r in records)
    # Short docstrings are kept with their signature (re.compile, len), so the median is
    # below MS MARCO's ~60 words; no passage is longer than the split allows.
    assert 20 <= lengths[len(lengths) // 2] <= 100 and lengths[-1] <= 100
    assert any("assert" in r["text"] for r in records)


def test_builtin_corpus_does_not_depend_on_what_the_process_imported() -> None:
    """torch replaces inspect.getfile and transformers adds Logger.warning_once: a process
    that imported them (as the demo and the export do) reads the same corpus as a bare one."""
    import inspect
    import logging

    import torch  # noqa: F401
    import transformers.utils.logging  # noqa: F401

    assert inspect.getfile.__module__ != "inspect" and hasattr(logging.Logger, "warning_once")
    ids = {r["_id"] for r in passages()}
    assert "doc-inspect.getfile-0" in ids
    assert not any("warning_once" in i or "info_once" in i for i in ids)


@pytest.mark.slow
def test_demo_builds_serves_and_reuses(tiny_distilbert: Path, tmp_path: Path) -> None:
    command = [sys.executable, "-m", "bertdot.cli.main", "demo", "--model", str(tiny_distilbert),
               "--workdir", str(tmp_path), "--passages", "60"]  # fmt: skip
    process = subprocess.Popen(
        [*command, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert process.stdout is not None
    lines = []
    target = None
    try:
        for line in process.stdout:
            lines.append(line)
            found = re.search(r"serving on (\S+:\d+)", line)
            if found:
                target = found.group(1)
            if line.startswith("try: bertdot search"):
                break
        output = "".join(lines)
        assert target, output
        assert f"model: {tiny_distilbert} — asked for with --model" in output
        for step in ("[1/3] export", "[2/3] index", "[3/3] serve"):
            assert step in output
        assert "built-in corpus: 60 passages" in output
        with Client(target, timeout=10) as client:
            result = client.search("the assert statement", k=3)
            assert len(result.hits) == 3
            assert client.info().index.size == 60
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()
    again = subprocess.run(
        [*command, "--no-serve"], capture_output=True, text=True, timeout=120, check=True
    )
    assert "reusing the artifact" in again.stdout and "reusing the index" in again.stdout


# An everyday query → the objects that answer it.
EVERYDAY_QUERIES = {
    "how do I read a csv file": {"csv.reader", "csv.DictReader"},
    "list files in a directory": {"os.listdir", "os.scandir"},
    "sort a list": {"sorted", "list.sort"},
    "length of a list": {"len"},
    "open a file": {"open"},
    "square root": {"math.sqrt"},
    "current time": {"time.time"},
    "compile a regular expression": {"re.compile"},
    "connect to a sqlite database": {"sqlite3.connect"},
    "parse json": {"json.loads"},
    "iterate over combinations": {"itertools.combinations"},
}


def _name(record: dict[str, str]) -> str:
    return record["title"].removeprefix("Python standard library: ")


def test_builtin_corpus_documents_builtins_c_functions_and_short_docstrings() -> None:
    records = list(passages())
    by_id = {r["_id"]: r for r in records}
    assert len(by_id) == len(records)  # ids are unique
    expected = [
        *("doc-sorted-0", "doc-len-0", "doc-open-0", "doc-list.sort-0"),  # builtins
        *("doc-math.sqrt-0", "doc-time.time-0", "doc-itertools.combinations-0"),  # C modules
        *("doc-os.listdir-0", "doc-csv.reader-0", "doc-sqlite3.connect-0"),  # C, via a .py module
        "doc-re.compile-0",  # a one-line docstring
    ]
    assert [i for i in expected if i not in by_id] == []
    # A short docstring is kept, after its signature (from inspect, or the docstring's own).
    assert by_id["doc-re.compile-0"]["text"].startswith("re.compile(pattern, flags=0): Compile")
    assert by_id["doc-math.sqrt-0"]["text"].startswith("math.sqrt(x")
    assert by_id["doc-time.time-0"]["text"].startswith("time.time(): Return the current time")
    assert by_id["doc-sorted-0"]["title"] == "Python standard library: sorted"
    # A C function re-exported by a .py module is documented once, under the .py module's name.
    names = {_name(r) for r in records if r["_id"].startswith("doc-")}
    assert "os.listdir" in names and "posix.listdir" not in names
    assert not any(" at 0x" in r["text"] for r in records)  # no object addresses: deterministic


@pytest.mark.slow
def test_everyday_queries_find_their_object_in_the_top_5(tmp_path: Path) -> None:
    from bertdot.export.pipeline import ExportOptions, export_artifact
    from bertdot.server.encoding.encoder import Encoder

    artifact = tmp_path / "minilm"
    export_artifact(
        ExportOptions(model=str(MINILM_DIR), out=artifact, precisions=("fp32",)),
        say=lambda _: None,
    )
    # Exact search over the passages of the modules and builtins the queries name (~500), where
    # the closest competitors are (os.scandir, json.dumps, time.time_ns, list.extend…): the
    # whole corpus (~7,500) takes minutes to encode on a CPU.
    modules = {name.split(".")[0] for names in EVERYDAY_QUERIES.values() for name in names}
    records = [
        r for r in passages() if r["_id"].startswith("doc-") and _name(r).split(".")[0] in modules
    ]
    encoder = Encoder(artifact, device="cpu")
    vectors = encoder.encode([r["title"] + " " + r["text"] for r in records]).vectors
    queries = encoder.encode(list(EVERYDAY_QUERIES)).vectors
    misses: dict[str, list[str]] = {}
    for (query, wanted), scores in zip(EVERYDAY_QUERIES.items(), queries @ vectors.T, strict=True):
        top = [_name(records[i]) for i in np.argsort(-scores, kind="stable")[:5]]
        if not wanted & set(top):
            misses[query] = top
    assert misses == {}, f"searched {len(records)} passages"
