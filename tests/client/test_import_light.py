"""A service that only queries must not pull in the model stack."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("onnxruntime", "hnswlib", "tokenizers", "torch", "transformers", "ray")


def test_import_client_does_not_import_model_stack() -> None:
    code = (
        "import sys, bertdot.client\n"
        "from bertdot.client import AsyncClient, Client\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing bertdot.client imported {out.stdout.strip()}"
