"""The `bertdot` console script: one command, a subcommand per job.

Each part registers its own subcommands through the `bertdot.commands` entry-point group
(see pyproject.toml), from a light module: heavy dependencies are imported only when a
subcommand runs, so `bertdot --help` works on a client-only install and this script knows
no part by name. A subcommand names the extras it needs (`set_defaults(extras=...)`); a
missing one is reported with the install command before the subcommand runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from bertdot.cli.extras import require_extras

COMMAND_GROUP = "bertdot.commands"
# The order `--help` lists the parts in: the workflow's. Parts not named here follow.
WORKFLOW = ("export", "index", "serve", "demo", "eval", "client")


def _rank(name: str) -> tuple[int, str]:
    return (WORKFLOW.index(name) if name in WORKFLOW else len(WORKFLOW), name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertdot", description="Dense retrieval over gRPC with the BERT_Dot encoder."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for entry in sorted(entry_points(group=COMMAND_GROUP), key=lambda e: _rank(e.name)):
        entry.load()(subparsers)
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
    require_extras(getattr(args, "extras", ()))
    return int(args.handler(args) or 0)


def console() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    console()
