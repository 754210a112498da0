"""`bertdot index build`: corpus → encoded passages in the store → HNSW graph → manifest.

Resume: each encoded batch is committed to the passage store together with the number of
corpus records it completes, in one SQLite transaction. A killed build therefore leaves a
consistent checkpoint; `resume=True` skips that many records (checking the last one is the
passage the store holds last) and encodes only the rest. The graph is built from the store
once every passage is encoded, so an interruption while building it costs no re-encoding.
The manifest is written last: a folder without one is an unfinished build.
"""

from __future__ import annotations

import itertools
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from bertdot.server.index.corpus import CorpusError, Record, measure, read_corpus
from bertdot.server.index.graph import space_for
from bertdot.server.index.graphs import new_graph
from bertdot.server.index.index import (
    DEFAULT_EF,
    MANIFEST_NAME,
    STORE_NAME,
    IndexManifest,
    graph_suffix,
)
from bertdot.server.index.store import DuplicateIdError, PassageStore
from bertdot.server.indexing.protocols import TextEncoder

Say = Callable[[str], None]
BYTES_PER_VALUE = {"f32": 4, "f16": 2, "i8": 1}
_GIB = 1 << 30


class BuildError(ValueError):
    """A build cannot start or continue (resume mismatch, encoder output unusable)."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass(frozen=True)
class MemoryEstimate:
    passages: int
    vectors_bytes: int
    graph_bytes: int
    disk_bytes: int

    @classmethod
    def of(
        cls, passages: int, dim: int, M: int, corpus_bytes: int, kind: str = "f32"
    ) -> MemoryEstimate:
        """`kind`: the graph's copy of the vectors (f32, f16 or i8: 4, 2 or 1 byte a value)."""
        vectors = passages * dim * BYTES_PER_VALUE[kind]
        # Level-0 links (2M ids of 4 B + a count), the label, a per-element lock and the
        # label → id hash map: ~100 B besides the links. Upper levels add ~1/M more.
        graph = int(passages * (2 * M * 4 + 4 + 100) * (1 + 1 / M))
        # The store keeps text and float32 vector; the saved graph holds its own vectors and
        # links again.
        stored = passages * dim * 4
        return cls(passages, vectors, graph, corpus_bytes + stored + vectors + graph)

    def describe(self) -> str:
        ram = self.vectors_bytes + self.graph_bytes
        return (
            f"about {self.passages:,} passages: the index needs ~{_size(ram)} of RAM "
            f"(vectors {_size(self.vectors_bytes)} + graph {_size(self.graph_bytes)}) "
            f"to build and to serve, and ~{_size(self.disk_bytes)} of disk"
        )


class ResourceError(BuildError):
    """The machine has less free memory or disk than the build's bill."""


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux): what can be allocated without swapping."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_resources(bill: MemoryEstimate, out: Path, force: bool, say: Say) -> None:
    """Refuse a build that cannot fit, with the numbers (`force`: warn and go on)."""
    problems = []
    ram = bill.vectors_bytes + bill.graph_bytes
    free_ram = available_memory()
    if free_ram is not None and ram > free_ram:
        problems.append(f"it needs ~{_size(ram)} of RAM and {_size(free_ram)} is available")
    existing = out if out.exists() else out.parent
    while not existing.exists():
        existing = existing.parent
    free_disk = shutil.disk_usage(existing).free
    if bill.disk_bytes > free_disk:
        problems.append(
            f"it needs ~{_size(bill.disk_bytes)} of disk and {existing} has {_size(free_disk)} free"
        )
    if not problems:
        return
    message = "this build does not fit on this machine: " + "; ".join(problems)
    if not force:
        raise ResourceError(message + " (pass --force to try anyway)")
    say(f"warning: {message}; going on (--force)")


def _size(nbytes: int) -> str:
    return f"{nbytes / _GIB:.1f} GiB" if nbytes >= _GIB else f"{nbytes / (1 << 20):.1f} MiB"


class Identity(Protocol):
    """The model an index is built for: an encoder, or the artifact vectors were made with."""

    @property
    def fingerprint(self) -> str: ...

    @property
    def similarity(self) -> str: ...

    @property
    def dim(self) -> int: ...


# From this many passages an index gets M=32 unless its builder says otherwise: on 768-dim
# vectors M=32 reached recall@10 0.99 at ef 256 where M=16 needed 1024 (250,000 passages),
# and at a million it reached 0.994 at ef 1024 where M=16 stayed at 0.984, for 4% more memory
# and a build no slower in separate runs (784 s and 785 s at a million; benchmarks/results/
# scale-m32-sizes.md, scale.md, graph-libraries-250000.md).
LARGE_INDEX = 250_000


def default_m(passages: int) -> int:
    """HNSW links per node for an index of `passages` when none is asked for."""
    return 32 if passages >= LARGE_INDEX else 16


def _links(M: int | None, passages: int, say: Say) -> int:
    if M is not None:
        return M
    chosen = default_m(passages)
    if passages >= LARGE_INDEX:
        say(f"HNSW M={chosen}: the default from {LARGE_INDEX:,} passages (--m to choose)")
    return chosen


@dataclass(frozen=True)
class GraphSettings:
    M: int = 16
    ef_construction: int = 200
    ef_search: int = DEFAULT_EF
    threads: int = 0
    vectors: str = "f32"  # the graph's copy: f32 (hnswlib), f16 or i8 (usearch, compact)


def build_index(
    encoder: TextEncoder,
    corpus_path: str | Path,
    out_dir: str | Path,
    *,
    M: int | None = None,
    ef_construction: int = 200,
    batch_size: int = 64,
    resume: bool = False,
    progress: bool = True,
    threads: int = 0,
    ef_search: int = DEFAULT_EF,
    force: bool = False,
    vectors: str = "f32",
    say: Say = _stderr,
) -> IndexManifest:
    """Encode a corpus into a new index (or finish an interrupted build with `resume`).
    `M` None: `default_m` of the corpus's size."""
    corpus, out = Path(corpus_path), Path(out_dir)
    if not corpus.is_file():
        raise FileNotFoundError(f"corpus {corpus} not found")
    finished = _start(out, resume, say)
    if finished is not None:
        return finished
    size = measure(corpus)
    M = _links(M, size.lines, say)
    bill = MemoryEstimate.of(size.lines, encoder.dim, M, size.bytes, vectors)
    say(bill.describe())
    check_resources(bill, out, force, say)
    out.mkdir(parents=True, exist_ok=True)
    store = PassageStore(out / STORE_NAME, durable=False)
    try:
        _claim(store, encoder, {"build.corpus_bytes": str(corpus.stat().st_size)})
        truncated = _encode(store, encoder, corpus, size.lines, batch_size, progress, say)
        settings = GraphSettings(M, ef_construction, ef_search, threads, vectors)
        extra: dict[str, object] = {"truncated": truncated}
        manifest = _finish(store, out, encoder, settings, str(corpus.resolve()), extra, progress)
    finally:
        store.close()
    say(
        f"index {out}: {manifest.count:,} passages, {truncated:,} truncated at the model's "
        "max length"
    )
    return manifest


def import_vectors(
    model: Identity,
    shards: str | Path,
    out_dir: str | Path,
    *,
    M: int | None = None,
    ef_construction: int = 200,
    resume: bool = False,
    progress: bool = True,
    threads: int = 0,
    ef_search: int = DEFAULT_EF,
    force: bool = False,
    vectors: str = "f32",
    say: Say = _stderr,
) -> IndexManifest:
    """Build an index from vector shards made elsewhere (`bertdot index encode`, or any job
    that writes the format of `shards.py`) with the artifact `model`, refusing shards made
    with another model. Nothing is encoded here."""
    from bertdot.server.indexing.shards import ShardsInfo, count_passages, read_parts

    folder, out = Path(shards), Path(out_dir)
    info = ShardsInfo.read(folder)
    info.check_model(model.fingerprint, model.similarity, model.dim)
    finished = _start(out, resume, say)
    if finished is not None:
        return finished
    total = count_passages(folder)
    text_bytes = sum(p.stat().st_size for p in folder.glob("part-*.jsonl"))
    M = _links(M, total, say)
    bill = MemoryEstimate.of(total, model.dim, M, text_bytes, vectors)
    say(bill.describe())
    check_resources(bill, out, force, say)
    out.mkdir(parents=True, exist_ok=True)
    store = PassageStore(out / STORE_NAME, durable=False)
    try:
        _claim(store, model, {"build.shards": str(folder.resolve())})
        done = int(store.get_meta("build.records") or 0)
        if done:
            say(f"resuming after {done:,} passages already imported")
        seen = 0
        with tqdm(
            total=total, initial=done, unit="passage", desc="import", disable=not progress
        ) as bar:
            for passages, rows in read_parts(folder, info):
                if seen + len(passages) <= done:  # imported before the interruption
                    seen += len(passages)
                    continue
                skip = max(done - seen, 0)
                seen += len(passages)
                passages, rows = passages[skip:], rows[skip:]
                try:
                    store.add(passages, rows, meta={"build.records": str(seen)})
                except DuplicateIdError as exc:
                    raise BuildError(f"{folder}: {exc}") from exc
                bar.update(len(passages))
        settings = GraphSettings(M, ef_construction, ef_search, threads, vectors)
        manifest = _finish(store, out, model, settings, str(folder.resolve()), {}, progress)
    finally:
        store.close()
    say(f"index {out}: {manifest.count:,} passages imported from {folder}")
    return manifest


def _start(out: Path, resume: bool, say: Say) -> IndexManifest | None:
    """The manifest of a complete index when resuming one; refuses a non-empty new folder."""
    if (out / MANIFEST_NAME).is_file() and resume:
        say(f"{out} is already a complete index; nothing to resume")
        return IndexManifest.read(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not resume:
        raise FileExistsError(
            f"{out} is not empty; pass --resume to finish an interrupted build there, "
            "or choose a new directory"
        )
    return None


def _finish(
    store: PassageStore,
    out: Path,
    model: Identity,
    settings: GraphSettings,
    source: str,
    extra: dict[str, object],
    progress: bool,
) -> IndexManifest:
    """The graph from the stored vectors (streamed in chunks), then the manifest, last."""
    count = store.count()
    if count == 0:
        raise BuildError(f"{source} holds no passages")
    graph = new_graph(
        settings.vectors, space_for(model.similarity), model.dim, count, M=settings.M,
        ef_construction=settings.ef_construction,
    )  # fmt: skip
    graph.set_num_threads(settings.threads)
    with tqdm(total=count, unit="passage", desc="graph", disable=not progress) as bar:
        for chunk in store.iter_vectors(chunk=10_000):
            graph.add(chunk.vectors, chunk.labels)
            bar.update(len(chunk.labels))
    graph_file = "graph" + graph_suffix(settings.vectors)
    sha256 = graph.save(out / graph_file)
    store.checkpoint()
    manifest = IndexManifest(
        fingerprint=model.fingerprint,
        similarity=model.similarity,
        space=graph.space,
        dim=model.dim,
        count=count,
        M=settings.M,
        ef_construction=settings.ef_construction,
        ef_search=settings.ef_search,
        graph_file=graph_file,
        graph_sha256=sha256,
        graph_seq=store.max_seq(),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        corpus=source,
        extra=dict(extra),
        vectors=settings.vectors,
    )
    manifest.write(out)
    return manifest


def _claim(store: PassageStore, model: Identity, source: dict[str, str]) -> None:
    """Record what this build is made of, or check a resumed build is the same one."""
    identity = {
        "build.fingerprint": model.fingerprint,
        "build.similarity": model.similarity,
        "build.dim": str(model.dim),
        **source,
    }
    for key, value in identity.items():
        found = store.get_meta(key)
        if found is not None and found != value:
            raise BuildError(
                f"cannot resume in {store.path.parent}: it was started with "
                f"{key.removeprefix('build.')}={found}, this build has {value}"
            )
    store.set_meta(identity)


def _encode(
    store: PassageStore,
    encoder: TextEncoder,
    corpus: Path,
    lines: int,
    batch_size: int,
    progress: bool,
    say: Say,
) -> int:
    """Encode the records not yet stored; returns how many passages were truncated."""
    done = int(store.get_meta("build.records") or 0)
    truncated = int(store.get_meta("build.truncated") or 0)
    records = read_corpus(corpus)
    if done:
        _skip_done(records, done, store, corpus)
        say(f"resuming after {done:,} passages already encoded")
    started, encoded = time.perf_counter(), 0
    with tqdm(
        total=lines, initial=done, unit="passage", desc="encode", disable=not progress
    ) as bar:
        for batch in _batches(records, batch_size):
            passages = [r.passage for r in batch]
            out = encoder.encode([p.encoder_input() for p in passages])
            vectors = out.vectors
            if vectors.shape != (len(batch), encoder.dim) or not _finite(vectors):
                raise BuildError(
                    f"{corpus}:{batch[0].line}-{batch[-1].line}: the encoder returned shape "
                    f"{vectors.shape} or non-finite values (expected ({len(batch)}, {encoder.dim}))"
                )
            done += len(batch)
            truncated += int(out.truncated.sum())
            meta = {"build.records": str(done), "build.truncated": str(truncated)}
            try:
                store.add(passages, vectors, lines=[r.line for r in batch], meta=meta)
            except DuplicateIdError as exc:
                again = [r.line for r in batch if r.passage.id == exc.id]
                line = next(n for n in again if n != exc.first_line)
                raise CorpusError(corpus, line, str(exc)) from exc
            encoded += len(batch)
            bar.update(len(batch))
    seconds = time.perf_counter() - started
    if encoded:
        say(f"encoded {encoded:,} passages in {seconds:.1f} s ({encoded / seconds:,.0f}/s)")
    return truncated


def _skip_done(records: Iterator[Record], done: int, store: PassageStore, corpus: Path) -> None:
    """Advance past the records an interrupted build stored, checking the corpus is unchanged."""
    last = next(itertools.islice(records, done - 1, done), None)
    stored = store.last_added()
    if last is None or stored is None or stored[0] != last.passage.id:
        raise BuildError(
            f"cannot resume: {corpus} changed since the interrupted build (record {done} is "
            f"{last.passage.id if last else None!r}, the store last holds "
            f"{stored[0] if stored else None!r})"
        )


def _batches(records: Iterator[Record], size: int) -> Iterator[list[Record]]:
    while batch := list(itertools.islice(records, size)):
        yield batch


def _finite(vectors: np.ndarray) -> bool:
    return bool(np.isfinite(vectors).all())
