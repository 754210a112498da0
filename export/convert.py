"""PyTorch → ONNX fp32, and the fp16 derivative of the fp32 graph (int8: `quantize.py`)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from bertdot.export.errors import ExportError

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18


def export_fp32(model: Any, out_path: Path, opset: int = DEFAULT_OPSET) -> list[str]:
    """Export raw last hidden states with dynamic batch and sequence axes (via optimum).

    Exported as the `transformers` library (not sentence-transformers) so the graph keeps
    the raw hidden states and pooling stays ours, as the manifest records it.
    Returns the graph's input names.
    """
    import onnx
    from optimum.exporters.onnx import onnx_export_from_model

    with tempfile.TemporaryDirectory() as scratch:
        try:
            onnx_export_from_model(
                model,
                scratch,
                opset=opset,
                task="feature-extraction",
                library_name="transformers",
                do_validation=False,  # our own parity check runs on every precision below
            )
        except (RuntimeError, ValueError) as exc:  # e.g. an opset the exporter cannot write
            raise ExportError(f"the ONNX exporter failed at opset {opset}: {exc}") from exc
        exported = Path(scratch) / "model.onnx"
        if not exported.is_file():
            raise ExportError("optimum produced no model.onnx")
        graph = onnx.load(str(exported))
        onnx.save(graph, str(out_path))
    return [i.name for i in graph.graph.input]


def num_heads_and_hidden(model: Any) -> tuple[int, int]:
    config = model.config
    heads = int(getattr(config, "n_heads", 0) or getattr(config, "num_attention_heads", 0))
    hidden = int(getattr(config, "dim", 0) or getattr(config, "hidden_size", 0))
    return heads, hidden


def convert_fp16(fp32_path: Path, out_path: Path, model: Any) -> None:
    """fp16 weights with fp32 inputs/outputs, via ONNX Runtime's transformer optimizer.

    onnxconverter-common alone leaves Cast nodes that stop the model from loading; the
    optimizer's converter (GPU fusions, no further graph rewrites) gives a graph that
    runs on CUDA and also on the CPU provider, where parity is checked.
    """
    from onnxruntime.transformers import optimizer

    heads, hidden = num_heads_and_hidden(model)
    optimized = optimizer.optimize_model(
        str(fp32_path),
        model_type="bert",
        num_heads=heads,
        hidden_size=hidden,
        use_gpu=True,
        opt_level=0,
    )
    optimized.convert_float_to_float16(keep_io_types=True)
    optimized.save_model_to_file(str(out_path))
