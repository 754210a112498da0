"""`bertdot demo` end to end on the tiny model and a small slice of the built-in corpus."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bertdot.client import Client
from bertdot.server.indexing.builtin_corpus import passages


def test_builtin_corpus_is_real_text_of_a_few_thousand_passages() -> None:
    records = list(passages())
    assert 2000 <= len(records) <= 10000
    assert len({r["_id"] for r in records}) == len(records)
    lengths = sorted(len(r["text"].split()) for r in records)
    assert 30 <= lengths[len(lengths) // 2] <= 100  # passages of about MS MARCO's length
    assert any("assert" in r["text"] for r in records)


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
