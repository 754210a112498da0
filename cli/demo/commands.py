"""`bertdot demo` argument parsing (light: heavy imports happen when the command runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bertdot.server.app.commands import PORT, POSITIVE


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="export a model, index Python's own documentation, and serve it",
        description="The main job on a built-in default: export the BERT_Dot model (or the "
        "offline stand-in), build an index over a corpus of Python's documentation, and serve "
        "it over gRPC. A second run reuses what the first built.",
    )
    p.add_argument("--model", help="hub id or local checkpoint (default: BERT_Dot, else MiniLM)")
    p.add_argument("--workdir", type=Path, help="where artifacts and indexes go "
                   "(default: ~/.cache/bertdot/demo)")  # fmt: skip
    p.add_argument(
        "--passages", type=POSITIVE, help="index only the first N passages (default: all)"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=PORT, default=50051)
    p.add_argument("--metrics-port", type=PORT, help="Prometheus metrics port (default: none)")
    p.add_argument("--no-serve", action="store_true", help="stop after building")
    p.set_defaults(handler=run, extras=("server", "export"))


def run(args: argparse.Namespace) -> int:
    import asyncio

    from bertdot.cli.demo.steps import choose_model, default_workdir, ensure_artifact, ensure_index

    workdir = args.workdir or default_workdir()

    def say(line: str) -> None:
        print(f"      {line}", flush=True)

    from bertdot.export.errors import ExportError
    from bertdot.server.encoding.artifact import ArtifactError
    from bertdot.server.index.index import IndexLoadError
    from bertdot.server.indexing.build import BuildError

    try:
        choice = choose_model(args.model)
        print(f"model: {choice.reference} — {choice.reason}", flush=True)
        print("[1/3] export the model to ONNX", flush=True)
        artifact = ensure_artifact(choice, workdir, say)
        print("[2/3] index the built-in corpus", flush=True)
        index = ensure_index(artifact, workdir, args.passages, say)
    # OSError: an unwritable or wrongly typed --workdir; RuntimeError: ONNX Runtime.
    except (ExportError, ArtifactError, BuildError, IndexLoadError, OSError, RuntimeError) as exc:
        print(f"bertdot demo: error: {exc}", file=sys.stderr)
        return 2
    if args.no_serve:
        print(f"built: artifact {artifact}, index {index}")
        print(f"serve it with: bertdot serve --model {artifact} --index {index}")
        return 0
    print("[3/3] serve", flush=True)
    from bertdot.server.app.config import ServerConfig
    from bertdot.server.app.serve import serve_forever

    config = ServerConfig(
        model=artifact,
        index=index,
        host=args.host,
        port=args.port,
        metrics_port=args.metrics_port,
    )
    try:
        return asyncio.run(serve_forever(config))
    except (OSError, ValueError, IndexLoadError) as exc:  # e.g. the port is taken
        print(f"bertdot demo: error: {exc}", file=sys.stderr)
        return 2
