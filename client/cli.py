"""The `bertdot` console script: one command, a subcommand per job.

Each part registers its own subcommands from a light module; heavy dependencies are
imported only when a subcommand runs, so `bertdot --help` works on a client-only install.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

# (module with a `register(subparsers)` function) in the order shown by --help.
COMMAND_MODULES = (
    "bertdot.export.cli",
    "bertdot.server.index_cli",
    "bertdot.server.cli",
    "bertdot.server.demo_cli",
    "bertdot.server.eval_cli",
    "bertdot.client.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertdot", description="Dense retrieval over gRPC with the BERT_Dot encoder."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("bertdot."):
                continue  # a part not present in this build
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())
