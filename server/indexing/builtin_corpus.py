"""A built-in corpus of real text that needs no download: Python's own documentation.

Two sources ship with every CPython: the language reference topics behind `help()`
(`pydoc_data.topics`) and the docstrings of the standard library's modules, classes and
functions (read with `ast`, nothing is imported). Both are split into passages of about
the length BERT_Dot was trained on (~60-100 words).
"""

from __future__ import annotations

import ast
import json
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path

# Part of the demo's index name: a demo index built from an older corpus is not reused.
CORPUS_VERSION = 2
PASSAGE_WORDS = 80
MIN_WORDS = 12


def _split(text: str, max_words: int = PASSAGE_WORDS) -> Iterator[str]:
    """Paragraph-aware split into passages of at most `max_words` words."""
    current: list[str] = []
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        while words:
            room = max_words - len(current)
            if room <= 0 or (current and len(words) > room and len(current) >= MIN_WORDS * 2):
                yield " ".join(current)
                current = []
                continue
            current.extend(words[:room])
            words = words[room:]
    if len(current) >= MIN_WORDS:
        yield " ".join(current)


def _topics() -> Iterator[tuple[str, str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        title = f"Python language reference: {name}"
        for n, passage in enumerate(_split(topics[name])):
            yield f"topic-{name}-{n}", title, passage


# Packages that are tests, tools or internals rather than the library a user calls.
SKIPPED_PACKAGES = frozenset(
    {"distutils", "encodings", "ensurepip", "idlelib", "lib2to3", "pydoc_data", "test",
     "tkinter", "turtledemo"}
)  # fmt: skip


def _modules(stdlib: Path) -> Iterator[tuple[str, Path]]:
    """Public top-level modules, and packages with their public modules one level down
    (json, asyncio.tasks, urllib.parse, …): where most of the library's documentation is."""
    for path in sorted(stdlib.glob("*.py")):
        if not path.stem.startswith("_"):
            yield path.stem, path
    for init in sorted(stdlib.glob("*/__init__.py")):
        package = init.parent.name
        if package.startswith("_") or package in SKIPPED_PACKAGES:
            continue
        yield package, init
        for path in sorted(init.parent.glob("*.py")):
            if not path.stem.startswith("_"):
                yield f"{package}.{path.stem}", path


def _docstrings(stdlib: Path) -> Iterator[tuple[str, str, str]]:
    for module, path in _modules(stdlib):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        nodes: list[tuple[str, ast.AST]] = [(module, tree)]
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
                nodes.append((f"{module}.{node.name}", node))
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                nodes.extend(
                    (f"{module}.{node.name}.{method.name}", method)
                    for method in node.body
                    if isinstance(method, ast.FunctionDef) and not method.name.startswith("_")
                )
        for name, documented in nodes:
            doc = ast.get_docstring(documented)  # type: ignore[arg-type]
            if not doc:
                continue
            for n, passage in enumerate(_split(doc)):
                if len(passage.split()) >= MIN_WORDS:
                    yield f"doc-{name}-{n}", f"Python standard library: {name}", passage


def passages(limit: int | None = None) -> Iterator[dict[str, str]]:
    """BEIR-style records (`_id`, `title`, `text`), deterministic for a given Python."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    count = 0
    for source in (_topics(), _docstrings(stdlib)):
        for passage_id, title, text in source:
            if limit is not None and count >= limit:
                return
            yield {"_id": passage_id, "title": title, "text": text}
            count += 1


def write_corpus(path: Path, limit: int | None = None) -> int:
    """Write the corpus as JSONL (atomically); returns the passage count."""
    partial = path.with_suffix(".partial")
    count = 0
    with partial.open("w", encoding="utf-8") as out:
        for record in passages(limit):
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    partial.replace(path)
    return count
