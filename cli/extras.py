"""Which extra to install when a command's dependencies are missing.

A part's command says what it needs with `parser.set_defaults(extras=("server",))`; the
`bertdot` script checks that before running it, so no part imports this module and a
client-only install still prints a one-line instruction instead of a traceback.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable

# The modules that show an extra is installed (import names, not distribution names).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "client": ("hdrh", "tqdm"),
    "server": ("onnxruntime", "tokenizers", "hnswlib", "grpc_reflection", "prometheus_client"),
    "export": ("torch", "transformers", "optimum.exporters.onnx", "onnxruntime"),
    "eval": ("ir_measures",),
}


class MissingExtraError(SystemExit):
    """Raised (and exiting with status 2) when a command's optional dependencies are absent."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def require_extra(extra: str, *modules: str) -> None:
    """Refuse with the install command when any of `modules` (default: the extra's own) is
    missing."""
    missing = [m for m in modules or EXTRA_MODULES[extra] if not _installed(m)]
    if missing:
        raise MissingExtraError(
            f"bertdot: this command needs the '{extra}' extra (missing: {', '.join(missing)}); "
            f"install it with: pip install 'bertdot[{extra}]'"
        )


def require_extras(extras: Iterable[str]) -> None:
    for extra in extras:
        require_extra(extra)
