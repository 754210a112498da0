"""ONNX Runtime sessions: which execution provider, which precision file, which settings."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import onnxruntime as ort

from bertdot.server.encoding.artifact import ArtifactError, ArtifactManifest

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class DeviceUnavailable(ValueError):
    """The device asked for cannot run the encoder here (a ValueError: commands report it as
    a bad choice of flag, in one line)."""


@dataclass(frozen=True)
class SessionChoice:
    session: ort.InferenceSession
    provider: str
    precision: str
    reason: str
    path: Path  # the precision file the session runs
    options: ort.SessionOptions


def gpu_usable() -> bool:
    """True where the CUDA provider is installed and a GPU device node exists.

    onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU and then
    falls back silently; checking the device node first avoids loading the fp16 file
    for nothing.
    """
    if CUDA not in ort.get_available_providers():
        return False
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")


def _options(intra_op_threads: int, inter_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    # Spinning stays off (measured by `benchmarks/encoder.py --sweep` on 2 cores): it cut an
    # idle machine's single-query latency by 5-25%, but made it 1.3-3x slower while another
    # thread held a core (the server's own gRPC and tokenizer threads do) and burned ~35 ms
    # of CPU per call when idle; session.force_spinning_stop ends the burn, not the slowdown.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def _precision_file(root: Path, manifest: ArtifactManifest, precision: str) -> Path:
    if precision not in manifest.files:
        have = ", ".join(sorted(manifest.files))
        raise ArtifactError(f"artifact {root} has no {precision} file (it has: {have})")
    return root / manifest.files[precision]


def _load(path: Path, options: ort.SessionOptions, providers: list[str]) -> ort.InferenceSession:
    """A session over `path`; a file ONNX Runtime cannot read is the artifact's fault."""
    if not path.is_file():
        raise ArtifactError(f"the model file {path} is missing")
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ONNX Runtime's own types (InvalidProtobuf, Fail, …)
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise ArtifactError(
            f"ONNX Runtime cannot load {path} (damaged or incomplete? re-export it): {reason}"
        ) from exc


def open_session(
    root: Path,
    manifest: ArtifactManifest,
    *,
    device: Device = "auto",
    precision: str | None = None,
    intra_op_threads: int = 0,
    inter_op_threads: int = 0,
) -> SessionChoice:
    """Create the session: CUDA with fp16 where a GPU is usable; else the CPU with int8 where
    the artifact's int8 passed its quality gate at export, and fp32 otherwise.

    `precision` overrides the file (e.g. fp32 on CPU, or fp16 on CPU for checking).
    """
    options = _options(intra_op_threads, inter_op_threads)
    want_cuda = device == "cuda" or (device == "auto" and gpu_usable())
    if want_cuda:
        chosen = precision or ("fp16" if "fp16" in manifest.files else "fp32")
        path = _precision_file(root, manifest, chosen)
        session = _load(path, options, [CUDA, CPU])
        if session.get_providers()[0] == CUDA:
            return SessionChoice(session, CUDA, chosen, "a GPU is usable", path, options)
        if device == "cuda":
            raise DeviceUnavailable(
                "device 'cuda' was asked for, but ONNX Runtime cannot use a GPU here (none "
                "present, or the CUDA and cuDNN libraries its build needs are not on the "
                "loader path); use device 'auto' or 'cpu'"
            )
        log.warning("CUDA provider failed to initialise; falling back to the CPU")
    chosen, why = cpu_precision(manifest, precision)
    path = _precision_file(root, manifest, chosen)
    session = _load(path, options, [CPU])
    reason = "device 'cpu' was asked for" if device == "cpu" else "no usable GPU"
    return SessionChoice(session, CPU, chosen, f"{reason}; {why}", path, options)


def cpu_precision(manifest: ArtifactManifest, asked: str | None) -> tuple[str, str]:
    """The file the CPU runs, and why: int8 only when its export gate says it keeps quality."""
    if asked:
        return asked, f"{asked} was asked for"
    if manifest.gate_passed("int8"):
        gate = manifest.gates["int8"]
        return "int8", (
            f"int8 passed its quality gate (min cosine {gate.min_cosine:.4f} ≥ "
            f"{gate.required} to PyTorch on {gate.texts} texts)"
        )
    if "int8" in manifest.files:
        return "fp32", "int8 is in the artifact but has not passed its quality gate"
    return "fp32", "the CPU default"


def open_graph_session(choice: SessionChoice) -> ort.InferenceSession:
    """A second session over the same file, on the CUDA provider with graph capture on.

    Kept apart from the plain session, which runs every shape no graph was captured for:
    a capture session refuses a model with nodes outside CUDA and fixes its buffers.
    """
    providers = [(CUDA, {"enable_cuda_graph": "1"}), CPU]
    return ort.InferenceSession(str(choice.path), choice.options, providers=providers)
