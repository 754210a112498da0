"""A built-in corpus of real text that needs no download: Python's own documentation.

Two sources ship with every CPython: the language reference topics behind `help()`
(`pydoc_data.topics`) and the docstrings of the standard library: the builtins, the public
modules and one level of package submodules, their functions, classes and methods, in
Python or in C. An object's first passage starts with its signature, so that even a
one-line docstring says what it documents. Both are split into passages of about the length
BERT_Dot was trained on (~60-100 words).
"""

from __future__ import annotations

import builtins
import functools
import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

# Part of the demo's index name: a demo index built from an older corpus is not reused.
CORPUS_VERSION = 3
PASSAGE_WORDS = 80
MIN_WORDS = 12

# Modules with side effects on import (antigravity opens a browser, this prints, rlcompleter
# rebinds readline, lib2to3 writes a grammar cache), GUI toolkits, tests and tools rather
# than the library a user calls, and the deprecated aliases of re's internals.
SKIPPED = frozenset(
    {"__main__", "antigravity", "distutils", "encodings", "ensurepip", "idlelib", "lib2to3",
     "pydoc_data", "readline", "rlcompleter", "sre_compile", "sre_constants", "sre_parse",
     "test", "this", "tkinter", "turtle", "turtledemo"}
)  # fmt: skip
# C modules that implement a public one (`os.listdir` is `posix.listdir`): named through it.
IMPLEMENTATIONS = frozenset({"nt", "posix"})
# The other platform's os.path (ntpath on POSIX, importable anywhere) would document it twice.
OTHER_PATH = frozenset({"ntpath", "posixpath"} - {os.path.__name__})


def _split(text: str, max_words: int = PASSAGE_WORDS, keep_short: bool = False) -> Iterator[str]:
    """Paragraph-aware split into passages of at most `max_words` words; a short tail is
    dropped, and a short text too unless `keep_short` (it starts with its object's name)."""
    current: list[str] = []
    emitted = False
    for paragraph in re.split(r"\n\s*\n", text):
        words = paragraph.split()
        while words:
            room = max_words - len(current)
            if room <= 0 or (current and len(words) > room and len(current) >= MIN_WORDS * 2):
                yield " ".join(current)
                current, emitted = [], True
                continue
            current.extend(words[:room])
            words = words[room:]
    if current and (len(current) >= MIN_WORDS or (keep_short and not emitted)):
        yield " ".join(current)


def _topics() -> Iterator[tuple[str, str, str]]:
    from pydoc_data.topics import topics

    for name in sorted(topics):
        title = f"Python language reference: {name}"
        for n, passage in enumerate(_split(topics[name])):
            yield f"topic-{name}-{n}", title, passage


def _modules() -> list[ModuleType]:
    """builtins, the public .py modules, then the C ones (so a C function re-exported by a
    .py module, like `csv.reader` from `_csv`, is named after the .py module)."""
    names = sorted(n for n in sys.stdlib_module_names - SKIPPED - OTHER_PATH if n[0] != "_")
    names.remove("builtins")  # first, below
    modules: list[ModuleType] = []
    for name in names:  # a package's public submodules are appended as it is imported
        try:
            module = importlib.import_module(name)
        except Exception:  # another platform's module (winreg, msvcrt) or a missing C library
            continue
        modules.append(module)
        if "." not in name:  # and one level down: json.decoder, urllib.parse, but not ctypes.test
            subs = pkgutil.iter_modules(getattr(module, "__path__", []))
            names += [
                f"{name}.{s.name}" for s in subs if s.name[0] != "_" and s.name not in SKIPPED
            ]
    modules.sort(key=lambda m: (not str(getattr(m, "__file__", "")).endswith(".py"), m.__name__))
    return [builtins, *modules]


def _members(cls: type) -> Iterator[tuple[str, Any]]:
    """A class's own public methods and properties (inherited ones are documented once, on
    the class that defines them)."""
    for name, member in vars(cls).items():
        member = getattr(member, "__func__", member)  # classmethod, staticmethod
        if not name.startswith("_") and (inspect.isroutine(member) or isinstance(member, property)):
            yield name, member


class _Elided:
    def __repr__(self) -> str:
        return "..."


def _default(value: Any) -> Any:
    """A short literal default as it is, any other as `...`: a repr can vary between runs (an
    object's address) or leak the environment (`os.environ`), and an enum's is noise."""
    if value is inspect.Parameter.empty:
        return value
    literal = type(value) in (bool, int, float, str, bytes, type(None))
    return value if literal and len(repr(value)) <= 24 else _Elided()


def _signature(qualname: str, obj: Any, doc: str, member: bool) -> tuple[str | None, str]:
    """The signature (`inspect`, else the docstring's leading `name(...)` lines, as many C
    functions have, without their `-> result` as inspect's) and the docstring without those
    lines; or no signature and those lines, qualified, where they are all the docstring."""
    name = qualname.rsplit(".", 1)[-1]
    lines = doc.splitlines()
    pattern = re.compile(rf"(?:[\w.]+\.)?{re.escape(name)}(\(.*\))(\s*-+>.*)?$")
    leading: list[re.Match[str]] = []
    while len(leading) < len(lines) and (match := pattern.match(lines[len(leading)])):
        leading.append(match)
    doc = "\n".join(lines[len(leading) :])
    if leading and not doc.strip():  # `datetime.date(year, month, day) --> date object`
        return None, "; ".join(qualname + "".join(m.groups("")) for m in leading)
    try:
        sig = inspect.signature(obj)
        params = [p.replace(annotation=p.empty, default=_default(p.default))
                  for p in sig.parameters.values() if not p.name.startswith("_")]  # fmt: skip
        if member and params and params[0].name in ("self", "cls", "type"):
            params = params[1:]  # unbound methods: `list.sort(*, key=None, reverse=False)`
        text = str(sig.replace(parameters=params, return_annotation=sig.empty))
        if text != "(*args, **kwargs)":
            return qualname + text, doc
    except Exception:  # none known to inspect (many C functions), or a default it cannot read
        pass
    if leading:
        return "; ".join(qualname + m.group(1) for m in leading), doc
    # Or a usage line, as in `csv.reader`: "csv_reader = reader(iterable [, dialect='excel']".
    found = re.search(rf"\b{re.escape(name)}\(([^()]*)\)", " ".join(doc.split("\n\n")[0].split()))
    return (f"{qualname}({found.group(1)})" if found else qualname), doc


def _candidates(modules: list[ModuleType]) -> Iterator[tuple[tuple[int, ...], str, Any]]:
    """Every public name of every module, ranked so that each object is documented once,
    under its best name: where it is defined (builtins first), else where a module's
    `__all__` exports it, else any public name; its own name before an alias."""
    for index, module in enumerate(modules):
        yield (0, index, 0, False), module.__name__, module
        prefix = "" if module is builtins else module.__name__ + "."
        exported = getattr(module, "__all__", ())
        for name in dir(module):
            obj = getattr(module, name, None)
            if name.startswith("_") or not (inspect.isroutine(obj) or inspect.isclass(obj)):
                continue
            home = module is builtins or getattr(obj, "__module__", None) == module.__name__
            tier = 0 if home and module.__name__ not in IMPLEMENTATIONS else 1
            alias = name != getattr(obj, "__name__", name)  # bisect.bisect is bisect_right
            rank = (tier if tier == 0 or name in exported else 2, index, 1, alias)
            yield rank, prefix + name, obj
            for member_name, member in _members(obj) if inspect.isclass(obj) else ():
                own = member_name == getattr(member, "__name__", member_name)  # not pdb's do_b
                yield (*rank[:2], 2, alias or not own), f"{prefix}{name}.{member_name}", member


def _foreign(obj: Any) -> bool:
    """Defined outside the standard library: what an imported package attached to a standard
    class (transformers adds `warning_once` to `logging.Logger`) must not make the corpus
    depend on which packages the process imported."""
    module = getattr(getattr(obj, "__func__", obj), "__module__", None)
    if not isinstance(module, str):
        return False
    top = module.split(".", 1)[0]
    return top not in sys.stdlib_module_names and top != "builtins"


def _documented() -> Iterator[tuple[str, Any, bool]]:
    """(qualified name, object, whether it is a class member), in module order."""
    names: set[str] = set()
    objects: dict[int, Any] = {}  # by id, holding the objects so no id is reused
    kept: list[tuple[int, str, Any, bool]] = []
    for rank, qualname, obj in sorted(_candidates(_modules()), key=lambda c: (c[0], c[1])):
        if _foreign(obj):
            continue
        key = id(getattr(obj, "__func__", obj))  # a bound method is its function
        if qualname not in names and key not in objects:
            names.add(qualname)
            objects[key] = obj
            kept.append((rank[1], qualname, obj, rank[2] == 2))
    for _, qualname, obj, member in sorted(kept, key=lambda k: (k[0], k[1])):
        yield qualname, obj, member


def _docstrings() -> list[tuple[str, str, str]]:
    records: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    with warnings.catch_warnings():  # deprecated modules (and typing.io) warn when touched
        warnings.simplefilter("ignore")
        for qualname, obj, member in _documented():
            doc = obj.__doc__
            if not isinstance(doc, str) or not doc.strip() or doc in seen:
                continue  # once: `bytearray.upper` says what `bytes.upper` says
            seen.add(doc)
            doc = re.sub(r"``(.+?)``", r"\1", inspect.cleandoc(doc))  # reST literals, as text
            if inspect.ismodule(obj):  # a module's name is in the title, which is enough
                chunks = list(_split(doc))
            else:
                head, doc = (
                    _signature(qualname, obj, doc, member) if callable(obj) else (qualname, doc)
                )
                if doc.strip() == qualname.rsplit(".", 1)[-1]:
                    continue  # its name alone, as the `ast` operator classes have
                chunks = list(_split(f"{head}: {doc}" if head else doc, keep_short=True))
            title = f"Python standard library: {qualname}"
            records.extend((f"doc-{qualname}-{n}", title, text) for n, text in enumerate(chunks))
    return records


def passages(limit: int | None = None) -> Iterator[dict[str, str]]:
    """BEIR-style records (`_id`, `title`, `text`), deterministic for a given Python.

    Read in a fresh interpreter: packages imported here patch standard objects (torch
    replaces `inspect.getfile`, transformers adds `logging.Logger.warning_once`), and the
    corpus must not depend on what this process imported."""
    for count, record in enumerate(_clean_records()):
        if limit is not None and count >= limit:
            return
        yield dict(record)


@functools.lru_cache(maxsize=1)
def _clean_records() -> tuple[dict[str, str], ...]:
    code = f"import sys; from {__name__} import _records, _dump; _dump(_records(), sys.stdout)"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"reading the built-in corpus failed: {done.stderr.strip()[-500:]}")
    return tuple(json.loads(line) for line in done.stdout.splitlines() if line)


def _records() -> Iterator[dict[str, str]]:
    for source in (_topics, _docstrings):
        for passage_id, title, text in source():
            yield {"_id": passage_id, "title": title, "text": text}


def _dump(records: Iterator[dict[str, str]], out: TextIO) -> None:
    for record in records:
        out.write(json.dumps(record) + "\n")  # ASCII escapes: any locale's stdout takes them


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
