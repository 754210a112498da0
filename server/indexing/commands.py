"""`bertdot index build|check|snapshot|repair|backup` argument parsing (light: the model
stack, numpy and hnswlib are imported only when a subcommand runs, so `bertdot --help` works
on a client install)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

EXTRA_HINT = "this command needs the server extra: pip install 'bertdot[server]'"
FORCE_HELP = "build even where the memory and disk bill exceeds what this machine has free"
VECTOR_KINDS = ("f32", "f16", "i8")
VECTORS_HELP = (
    "the graph's copy of the vectors: f32 (hnswlib, the default), or compact f16 / i8 "
    "(usearch: half / a quarter of the vectors' memory; candidates rescored with the store's "
    "float32 vectors)"
)


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
    _graph_flags(build)
    build.add_argument("--batch-size", type=_positive, default=64, help="passages per batch (64)")
    build.add_argument("--resume", action="store_true", help="finish an interrupted build in --out")
    build.add_argument("--force", action="store_true", help=FORCE_HELP)
    build.add_argument("--vectors", choices=VECTOR_KINDS, default="f32", help=VECTORS_HELP)
    _runtime_flags(build)
    build.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    build.set_defaults(handler=run_build, extras=("server",))

    encode = commands.add_parser(
        "encode",
        help="encode a corpus into vector shards (here, or on a Ray cluster) for index import",
        description="Cut a plain corpus file into parts and encode each into a shard folder "
        "(part-NNNNN.jsonl + part-NNNNN.npy); a part already written is skipped, so a killed "
        "encode resumes. With --ray the parts run on Ray Data actors (one per GPU, or per "
        "--cpus-per-actor cores), which write into the folder directly: it must be on storage "
        "every node sees. Then: bertdot index import SHARDS --model ... --out ...",
    )
    encode.add_argument("--model", required=True, type=Path, help="artifact directory")
    encode.add_argument("--corpus", required=True, type=Path, help="plain .jsonl or .tsv corpus")
    encode.add_argument("--out", required=True, type=Path, help="shard folder to write")
    encode.add_argument(
        "--part-size", type=_positive, default=10_000, help="corpus lines per part (10000)"
    )
    encode.add_argument(
        "--ray", nargs="?", const="local", metavar="ADDRESS",
        help="run on Ray: a cluster address (auto, ray://host:10001), or none for a local one",
    )  # fmt: skip
    encode.add_argument("--actors", type=_positive, default=1, help="Ray actors (1)")
    encode.add_argument(
        "--cpus-per-actor", type=_positive, default=1, help="cores per Ray actor (1)"
    )
    encode.add_argument(
        "--gpus-per-actor", type=int, choices=(0, 1), default=0, help="1: one GPU per actor"
    )
    _runtime_flags(encode)
    encode.set_defaults(handler=run_encode, extras=("server",))

    importing = commands.add_parser(
        "import",
        help="build an index from vector shards computed elsewhere (no encoding)",
        description="Build an index from a shard folder (bertdot index encode, or any job "
        "writing its format: shards.json with the artifact fingerprint, part-NNNNN.jsonl and "
        "part-NNNNN.npy float32 vectors). Shards made with another model are refused.",
    )
    importing.add_argument("shards", type=Path, help="shard folder")
    importing.add_argument("--model", required=True, type=Path, help="artifact directory")
    importing.add_argument("--out", required=True, type=Path, help="index directory to write")
    _graph_flags(importing)
    importing.add_argument("--resume", action="store_true", help="finish an interrupted import")
    importing.add_argument("--force", action="store_true", help=FORCE_HELP)
    importing.add_argument("--vectors", choices=VECTOR_KINDS, default="f32", help=VECTORS_HELP)
    importing.add_argument("--threads", type=int, default=0, help="CPU threads for hnswlib (all)")
    importing.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    importing.set_defaults(handler=run_import, extras=("server",))

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


def _graph_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--m",
        type=_positive,
        default=None,
        help="HNSW links per node (16; 32 from 250,000 passages, where it needs a quarter of "
        "the ef for recall 0.99: README, Scale)",
    )
    parser.add_argument(
        "--ef-construction", type=_positive, default=200, help="HNSW build beam width (200)"
    )


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
    from bertdot.server.encoding.runtime import DeviceUnavailable
    from bertdot.server.index.corpus import CorpusError
    from bertdot.server.index.index import IndexLoadError
    from bertdot.server.indexing.build import BuildError

    # OSError: missing files, an existing output folder (FileExistsError), permissions;
    # RuntimeError: ONNX Runtime failed to load the model.
    return (
        ArtifactError,
        BuildError,
        CorpusError,
        DeviceUnavailable,
        IndexLoadError,
        OSError,
        RuntimeError,
    )


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
            force=args.force,
            vectors=args.vectors,
        )
    except ImportError:
        return _fail("build", EXTRA_HINT)
    except KeyboardInterrupt:
        print("\ninterrupted: rerun with --resume to continue", file=sys.stderr)
        return 130
    except known as exc:
        return _fail("build", exc)
    return 0


def run_encode(args: argparse.Namespace) -> int:
    from bertdot.server.indexing.shards import ShardError

    known: tuple[type[Exception], ...] = (*_known_errors(), ShardError, ImportError)
    try:
        encoder = _encoder(args)
        if args.ray is None:
            from bertdot.server.indexing.encode import encode_shards

            encode_shards(encoder, args.corpus, args.out, part_size=args.part_size,
                          source=str(args.model))  # fmt: skip
        else:
            from bertdot.server.indexing.ray_encode import encode_on_ray

            encode_on_ray(
                encoder, args.model, args.corpus, args.out,
                address=None if args.ray == "local" else args.ray, actors=args.actors,
                cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
                part_size=args.part_size,
            )  # fmt: skip
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to continue", file=sys.stderr)
        return 130
    except known as exc:
        return _fail("encode", exc)
    return 0


def run_import(args: argparse.Namespace) -> int:
    from bertdot.server.encoding.artifact import load_manifest
    from bertdot.server.indexing.build import import_vectors
    from bertdot.server.indexing.shards import ShardError

    known: tuple[type[Exception], ...] = (*_known_errors(), ShardError)
    try:
        import_vectors(
            load_manifest(args.model), args.shards, args.out, M=args.m,
            ef_construction=args.ef_construction, resume=args.resume,
            progress=not args.no_progress, threads=args.threads, force=args.force,
            vectors=args.vectors,
        )  # fmt: skip
    except KeyboardInterrupt:
        print("\ninterrupted: rerun with --resume to continue", file=sys.stderr)
        return 130
    except known as exc:
        return _fail("import", exc)
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
