"""One virtual environment per peer, made from a pinned spec and reused while the spec holds.

Nothing is installed into the project's environment, so no peer becomes a dependency of
bertdot. A venv carries a stamp (the spec, the base interpreter, install time, size and the
versions pip reports); a venv whose stamp matches is reused untouched, any other is rebuilt.
The stamp is written last, so an interrupted install has none and is rebuilt next time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STAMP = "peer-spec.json"


@dataclass(frozen=True)
class PeerSpec:
    name: str
    requirements: tuple[str, ...]
    # Installed first, in a pip call of their own: torch pinned before anything that depends
    # on it keeps the local CPU wheel instead of letting the resolver pick CUDA wheels.
    pre: tuple[str, ...] = ()
    # Imported after the install: a cheap proof that the venv works.
    imports: tuple[str, ...] = ()
    # The versions worth showing in a report.
    key_packages: tuple[str, ...] = field(default=(), compare=False)


@dataclass
class Venv:
    name: str
    path: Path
    python: Path
    reused: bool
    install_s: float | None
    size_mb: float
    versions: dict[str, str]

    def key_versions(self, spec: PeerSpec) -> dict[str, str]:
        return {k: v for k, v in self.versions.items() if k in spec.key_packages}


# Pins: the top-level package and the transitive ones that decide behaviour (ONNX Runtime,
# tokenizers, numpy, optimum); each set was verified on Python 3.11, CPU only.
SPECS: dict[str, PeerSpec] = {  # by contender; a venv is named after its PeerSpec
    # ~25 s, ~250 MB, no torch.
    "fastembed": PeerSpec(
        "fastembed",
        ("fastembed==0.9.1", "onnxruntime==1.32.0", "tokenizers==0.23.3"),
        imports=("fastembed",),
        key_packages=("fastembed", "onnxruntime", "tokenizers", "numpy"),
    ),
    # ~3 min, ~490 MB: the wheel bundles tritonserver 2.51 and its Python backend; no torch.
    # nvidia-pytriton 0.7.0 needs numpy<2.
    "triton": PeerSpec(
        "pytriton",
        (
            "nvidia-pytriton==0.7.0",
            "tritonclient[grpc]==2.73.0",
            "onnxruntime==1.32.0",
            "tokenizers==0.23.3",
            "numpy==1.26.4",
        ),
        imports=("pytriton", "tritonclient.grpc", "onnxruntime"),
        key_packages=("nvidia-pytriton", "tritonclient", "onnxruntime", "grpcio", "numpy"),
    ),
    # ~5-6 min, ~1.4 GB, of which torch is 750 MB: optimum 2.x declares torch a hard dependency.
    "infinity": PeerSpec(
        "infinity",
        (
            "infinity-emb[server,optimum]==0.0.78",
            "optimum==2.1.0",
            "optimum-onnx==0.1.0",
            "onnxruntime==1.32.0",
            "transformers==4.57.6",
            "numpy==1.26.4",
        ),
        pre=("torch==2.13.0",),
        imports=("infinity_emb", "optimum.onnxruntime"),
        key_packages=("infinity-emb", "optimum", "onnxruntime", "transformers", "torch"),
    ),
}


def base_python() -> str:
    """The interpreter a peer's venv is made from: the one under this process's venv, so a
    peer venv never sees the project's packages."""
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _dir_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root, name)
            if not file.is_symlink():
                total += file.stat().st_size
    return round(total / 2**20, 1)


def _versions(python: Path) -> dict[str, str]:
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format", "json", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(listed)}


def _pip_install(python: Path, requirements: tuple[str, ...], log: Path) -> None:
    """pip's chatter (one warning per package missing from a local mirror) goes to the log;
    a failure prints its tail."""
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements]
    with open(log, "a", encoding="utf-8") as handle:
        handle.write("$ " + " ".join(command) + "\n")
        handle.flush()
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"pip install failed ({log}):\n" + "\n".join(tail))


def _stamp_matches(stamp: Path, spec: PeerSpec, base: str) -> dict[str, Any] | None:
    try:
        meta = json.loads(stamp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    wanted = {"requirements": list(spec.requirements), "pre": list(spec.pre), "base": base}
    have = {k: meta.get(k) for k in wanted}
    return dict(meta) if have == wanted else None


def ensure_venv(spec: PeerSpec, root: Path, say: Callable[[str], None] = print) -> Venv:
    """The peer's venv under `root` (venv-<name>), built only when its stamp does not match."""
    venv = root / f"venv-{spec.name}"
    python = venv / "bin" / "python"
    stamp = venv / STAMP
    base = base_python()
    meta = _stamp_matches(stamp, spec, base) if python.exists() else None
    if meta is not None:
        return Venv(
            spec.name, venv, python, True, meta["install_s"], meta["size_mb"], meta["versions"]
        )
    if venv.exists():
        if not (venv / "pyvenv.cfg").is_file():
            raise RuntimeError(f"{venv} exists and is not a virtual environment; not deleting it")
        say(f"  {venv}: spec changed or install unfinished, rebuilding")
        shutil.rmtree(venv)
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"pip-{spec.name}.log"
    log.write_text("", encoding="utf-8")
    say(f"  installing {spec.name} into {venv} (pip output: {log})")
    started = time.perf_counter()
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    if spec.pre:
        _pip_install(python, spec.pre, log)
    _pip_install(python, spec.requirements, log)
    for module in spec.imports:
        subprocess.run([str(python), "-c", f"import {module}"], check=True)
    install_s = round(time.perf_counter() - started, 1)
    versions, size_mb = _versions(python), _dir_mb(venv)
    meta = {
        "requirements": list(spec.requirements),
        "pre": list(spec.pre),
        "base": base,
        "install_s": install_s,
        "size_mb": size_mb,
        "versions": versions,
        "spec": asdict(spec),
    }
    stamp.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    say(f"  {spec.name}: installed in {install_s} s, {size_mb} MB")
    return Venv(spec.name, venv, python, False, install_s, size_mb, versions)
