"""Tell the user which extra to install when a subcommand's dependencies are missing."""

from __future__ import annotations

import importlib.util


class MissingExtraError(SystemExit):
    """Raised (and exiting with status 2) when a command's optional dependencies are absent."""


def require_extra(extra: str, *modules: str) -> None:
    missing = []
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise MissingExtraError(
            f"bertdot: this command needs the '{extra}' extra (missing: {', '.join(missing)}); "
            f"install it with: pip install 'bertdot[{extra}]'"
        )
