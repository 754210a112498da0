"""Regenerate the Python stubs of `bertdot.proto`.

Usage: ``python -m bertdot.v1.codegen [OUT_DIR]`` (default: next to the proto).

protoc is run with ``-I`` set to the ``protos/`` root and the proto named by its
package path (``bertdot/v1/bertdot.proto``), so the generated import reads
``from bertdot.v1 import bertdot_pb2`` and needs no sed post-processing.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

PROTO_DIR = Path(__file__).resolve().parent
PROTO_ROOT = PROTO_DIR.parent.parent  # protos/
PROTO_NAME = "bertdot/v1/bertdot.proto"
GENERATED = ("bertdot_pb2.py", "bertdot_pb2.pyi", "bertdot_pb2_grpc.py")


def generate(out_dir: Path | str | None = None) -> list[Path]:
    """Run protoc into `out_dir`; return the generated files.

    protoc writes into ``<staging>/bertdot/v1/`` (the package path); the files
    are then moved so that ``out_dir`` holds them directly.
    """
    from grpc_tools import protoc  # dev dependency only: imported when regenerating

    out = Path(out_dir) if out_dir is not None else PROTO_DIR
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        return _run_protoc(protoc, Path(tmp), out)


def _run_protoc(protoc: Any, staging: Path, out: Path) -> list[Path]:
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={staging}",
        f"--pyi_out={staging}",
        f"--grpc_python_out={staging}",
        PROTO_NAME,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    produced = []
    for name in GENERATED:
        src = staging / "bertdot" / "v1" / name
        dst = out / name
        shutil.copyfile(src, dst)
        produced.append(dst)
    return produced


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    for path in generate(args[0] if args else None):
        print(path)


if __name__ == "__main__":
    main()
