"""`bertdot index build|check|snapshot|repair|backup` argument parsing (light: the model
stack, numpy and hnswlib are imported only when a subcommand runs, so `bertdot --help` works
on a client install)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXTRA_HINT = "this command needs the server extra: pip install 'bertdot[server]'"


def _ef_list(value: str) -> list[int]:
    try:
        efs = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a comma-separated list") from None
    if not efs or min(efs) < 1:
        raise argparse.ArgumentTypeError("ef values must be positive integers")
    return efs


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return number


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "index", help="build and check a dense-retrieval index", description=__doc__
    )
    commands = parser.add_subparsers(dest="index_command", metavar="SUBCOMMAND", required=True)

    build = commands.add_parser(
        "build",
        help="encode a corpus and build its HNSW index",
        description="Encode a corpus (JSONL with _id/title/text, or TSV id<TAB>text; plain or "
        "gzip) with an exported artifact and write an index directory.",
    )
    build.add_argument("--model", required=True, type=Path, help="artifact directory")
    build.add_argument("--corpus", required=True, type=Path, help="corpus file (.jsonl, .tsv)")
    build.add_argument("--out", required=True, type=Path, help="index directory to write")
    build.add_argument("--m", type=_positive, default=16, help="HNSW links per node (16)")
    build.add_argument(
        "--ef-construction", type=_positive, default=200, help="HNSW build beam width (200)"
    )
    build.add_argument("--batch-size", type=_positive, default=64, help="passages per batch (64)")
    build.add_argument("--resume", action="store_true", help="finish an interrupted build in --out")
    _runtime_flags(build)
    build.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    build.set_defaults(handler=run_build, extras=("server",))

    check = commands.add_parser(
        "check",
        help="measure HNSW recall against exact search and recommend ef",
        description="Report recall@10 of HNSW against exact search and the median latency for "
        "several ef values, and recommend the smallest ef reaching recall 0.99.",
    )
    check.add_argument("index_dir", type=Path, help="index directory")
    check.add_argument(
        "--model", type=Path, help="artifact directory (default: perturbed stored vectors)"
    )
    check.add_argument("--queries", type=Path, help="query file, one per line")
    check.add_argument("--samples", type=_positive, default=200, help="sampled queries (200)")
    check.add_argument(
        "--ef", type=_ef_list, default=None, help="comma-separated (16,32,64,128,256,512)"
    )
    check.add_argument("--json", type=Path, help="write the report as JSON here")
    check.add_argument(
        "--set-default", action="store_true", help="record the recommended ef in the index"
    )
    _runtime_flags(check)
    check.set_defaults(handler=run_check, extras=("server",))

    snapshot = commands.add_parser(
        "snapshot",
        help="save the graph with every write of the store, so restarts replay nothing",
        description="Replay the writes the passage store holds beyond the saved graph and save "
        "the graph atomically (new file, fsync, manifest switched by rename). Refused while a "
        "server that accepts writes holds the index.",
    )
    snapshot.add_argument("index_dir", type=Path, help="index directory")
    snapshot.set_defaults(handler=run_maintenance, action="snapshot", extras=("server",))

    repair = commands.add_parser(
        "repair",
        help="rebuild a missing or corrupt graph file from the passage store",
        description="The passage store is the source of truth and the graph a cache of it: a "
        "graph file that is missing or fails its sha256 is rebuilt from the stored vectors "
        "and saved. An intact graph is only brought up to date.",
    )
    repair.add_argument("index_dir", type=Path, help="index directory")
    repair.set_defaults(handler=run_maintenance, action="repair", extras=("server",))

    backup = commands.add_parser(
        "backup",
        help="copy an index consistently, while a server keeps serving and writing it",
        description="Copy the graph, then the passage store through SQLite's online backup API, "
        "into a new folder that a server can be started from (it replays the writes the copy's "
        "store holds beyond its graph). The copy's store is checked (quick_check) before the "
        "folder is renamed into place.",
    )
    backup.add_argument("index_dir", type=Path, help="index directory (may be serving)")
    backup.add_argument("dest", type=Path, help="new folder for the copy (must not exist)")
    backup.set_defaults(handler=run_backup, extras=("server",))


def _runtime_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--threads", type=int, default=0, help="CPU threads for ONNX Runtime and hnswlib (all)"
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--precision", help="fp32, fp16 or int8 (default: by device)")


def _encoder(args: argparse.Namespace) -> Any:
    from bertdot.server.encoding.encoder import Encoder

    return Encoder(
        args.model, device=args.device, precision=args.precision, intra_op_threads=args.threads
    )


def _fail(command: str, message: object) -> int:
    print(f"bertdot index {command}: error: {message}", file=sys.stderr)
    return 2


def _known_errors() -> tuple[type[Exception], ...]:
    """Errors with a message meant for the user: printed in one line, exit status 2."""
    from bertdot.server.encoding.artifact import ArtifactError
    from bertdot.server.index.corpus import CorpusError
    from bertdot.server.index.index import IndexLoadError
    from bertdot.server.indexing.build import BuildError

    # OSError: missing files, an existing output folder (FileExistsError), permissions;
    # RuntimeError: ONNX Runtime failed to load the model.
    return (ArtifactError, BuildError, CorpusError, IndexLoadError, OSError, RuntimeError)


def run_build(args: argparse.Namespace) -> int:
    try:
        from bertdot.server.indexing.build import build_index

        known = _known_errors()
    except ImportError:
        return _fail("build", EXTRA_HINT)
    try:
        build_index(
            _encoder(args),
            args.corpus,
            args.out,
            M=args.m,
            ef_construction=args.ef_construction,
            batch_size=args.batch_size,
            resume=args.resume,
            progress=not args.no_progress,
            threads=args.threads,
        )
    except ImportError:
        return _fail("build", EXTRA_HINT)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun with --resume to continue", file=sys.stderr)
        return 130
    except known as exc:
        return _fail("build", exc)
    return 0


def run_check(args: argparse.Namespace) -> int:
    try:
        from bertdot.server.index.index import Index
        from bertdot.server.indexing.check import (
            DEFAULT_EFS,
            check_index,
            read_queries,
            sample_queries,
        )

        known = _known_errors()
    except ImportError:
        return _fail("check", EXTRA_HINT)
    failures: tuple[type[Exception], ...] = (ValueError, *known)  # ValueError: no queries
    if args.queries is not None and args.model is None:
        return _fail("check", "--queries needs --model to encode them")
    try:
        encoder = _encoder(args) if args.model is not None else None
        index = Index.open(
            args.index_dir,
            expected_fingerprint=encoder.fingerprint if encoder else None,
            expected_similarity=encoder.similarity if encoder else None,
        )
    except ImportError:
        return _fail("check", EXTRA_HINT)
    except known as exc:
        return _fail("check", exc)
    try:
        texts = read_queries(args.queries) if args.queries else None
        vectors, source = sample_queries(
            index, encoder=encoder, query_texts=texts, samples=args.samples
        )
        report = check_index(index, vectors, efs=args.ef or DEFAULT_EFS, source=source)
        print(f"{args.index_dir}: {index.count:,} passages, {source}")
        print(f"passage store: SQLite quick_check ok ({index.store_check_s or 0:.2f} s)")
        print(report.table())
        if args.json:
            report.write_json(args.json)
        if args.set_default:
            if report.recommended_ef is None:
                return _fail("check", "no ef reached the target recall; default ef unchanged")
            index.set_default_ef(report.recommended_ef)
            print(f"default ef of {args.index_dir} set to {report.recommended_ef}")
    except failures as exc:
        return _fail("check", exc)
    finally:
        index.close()
    return 0


def run_backup(args: argparse.Namespace) -> int:
    from bertdot.server.indexing.backup import backup

    try:
        print(backup(args.index_dir, args.dest))
    except _known_errors() as exc:
        return _fail("backup", exc)
    return 0


def run_maintenance(args: argparse.Namespace) -> int:
    try:
        from bertdot.server.indexing import maintenance

        known = _known_errors()
    except ImportError:
        return _fail(args.action, EXTRA_HINT)
    try:
        print(getattr(maintenance, args.action)(args.index_dir))
    except known as exc:
        return _fail(args.action, exc)
    return 0
