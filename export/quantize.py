"""int8 for the CPU: a quantised graph that keeps retrieval quality.

Plain dynamic quantisation of every MatMul cost all-MiniLM-L6-v2 0.018 MRR@10 (min cosine
0.990 to PyTorch): LayerNorm outputs carry a few outlier channels (up to 16x the median
channel), so one scale per tensor leaves the other channels a handful of int8 steps. The
recipe, each step measured on MiniLM and the BERT_Dot-shaped DistilBERT:

1. Fuse the fp32 graph with ONNX Runtime's transformer optimizer (Attention,
   SkipLayerNormalization, BiasGelu): quantising the fused graph gives QAttention and fewer
   DynamicQuantizeLinear passes, the fastest int8 graph measured.
2. SmoothQuant (Xiao et al., 2023) on the inputs of the QKV projection and of the first FFN
   MatMul: per input channel j, s_j = max|x_j|^alpha / max|W_j|^(1-alpha), a Mul by 1/s
   before the node and row j of its weight times s_j. Exact in fp32; it moves the outliers
   from activations into weights, which are quantised per channel. Calibrated on texts
   (`calibration.py`); only the per-channel maxima are read. alpha 0.65 measured best of
   0.5, 0.65, 0.75; smoothing the GELU output (second FFN MatMul) made every alpha worse.
3. `quantize_dynamic` with per-channel uint8 weights on MatMul and Attention; the embedding
   Gather stays fp32, and so does the second FFN MatMul of the first three layers, the most
   sensitive nodes left (keeping two: min cosine 0.9954 and -0.005 MRR@10; three: 0.997
   and -0.0005).

Why uint8 weights: on x86-64 without VNNI (AVX2 only, e.g. AMD Zen 2/3) MLAS's u8 x s8 kernel
sums pairs in 16 bits and saturates; with smoothed weights that cost MiniLM 0.06 of min
cosine. u8 x u8 does not saturate on any x86 CPU.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from bertdot.export.errors import ExportError

log = logging.getLogger(__name__)

Role = Literal["qkv", "attn_out", "ffn_in", "ffn_out"]
GELU_OPS = frozenset({"Gelu", "BiasGelu", "FastGelu", "Erf"})
KEEP_FP32: tuple[tuple[Role, int], ...] = (("ffn_out", 0), ("ffn_out", 1), ("ffn_out", 2))
SMOOTH_ROLES: tuple[Role, ...] = ("qkv", "ffn_in")
SMOOTH_ALPHA = 0.65


@dataclass(frozen=True)
class QuantizeReport:
    """What the recipe did, recorded in the artifact manifest."""

    fused_ops: dict[str, int]
    smoothed_nodes: int
    kept_fp32: list[str]
    quantized_nodes: int
    weight_type: str
    smooth_alpha: float
    calibration_texts: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_feeds(
    texts: Sequence[str], tokenizer_json: Path, input_names: Sequence[str], max_length: int
) -> list[dict[str, np.ndarray]]:
    """One text per feed, unpadded: pad positions would widen the measured maxima."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length)
    feeds = []
    for encoding in tokenizer.encode_batch(list(texts)):
        ids = np.asarray([encoding.ids], dtype=np.int64)
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
        }
        feeds.append({k: v for k, v in feed.items() if k in input_names})
    return feeds


# --- graph structure ------------------------------------------------------------------------


def _weight_consumers(model: Any) -> dict[str, list[Any]]:
    """Activation tensor → the MatMul / Attention nodes that multiply it by a weight."""
    initializers = {i.name for i in model.graph.initializer}
    groups: dict[str, list[Any]] = defaultdict(list)
    for node in model.graph.node:
        weighted = len(node.input) > 1 and node.input[1] in initializers
        if node.op_type in ("MatMul", "Attention") and weighted:
            groups[node.input[0]].append(node)
    return groups


def classify(model: Any) -> dict[str, tuple[Role, int]]:
    """Each weight node's role in its transformer layer, and the layer's index.

    Works on raw exports (three MatMuls share the QKV input; GELU as Erf arithmetic) and on
    fused graphs (one Attention node; BiasGelu / Gelu).
    """
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list[Any]] = defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)

    def feeds_gelu(tensor: str, depth: int = 3) -> bool:
        """The output reaches a GELU within a few element-wise steps (bias Add, Div → Erf)."""
        frontier = [tensor]
        for _ in range(depth):
            following = []
            for t in frontier:
                for c in consumers.get(t, []):
                    if c.op_type in GELU_OPS:
                        return True
                    if c.op_type in ("Add", "Div", "Mul"):
                        following.extend(c.output)
            frontier = following
        return False

    def is_erf_tail(node: Any) -> bool:
        return (
            node is not None
            and node.op_type == "Add"
            and any(
                producer.get(j) is not None and producer[j].op_type == "Erf" for j in node.input
            )
        )

    def from_gelu(tensor: str, depth: int = 4) -> bool:
        """Produced by a GELU, fused or as Erf arithmetic: Mul(Mul(x, Add(Erf(..), 1)), 0.5)."""
        node = producer.get(tensor)
        for _ in range(depth):
            if node is None:
                return False
            if node.op_type in GELU_OPS:
                return True
            if node.op_type != "Mul":
                return False
            parents = [producer.get(i) for i in node.input]
            if any(is_erf_tail(p) for p in parents):
                return True
            node = next((p for p in parents if p is not None and p.op_type == "Mul"), None)
        return False

    roles: dict[str, tuple[Role, int]] = {}
    counters: dict[Role, int] = defaultdict(int)
    for tensor, nodes in _weight_consumers(model).items():
        role: Role
        if len(nodes) >= 3 or nodes[0].op_type == "Attention":
            role = "qkv"
        elif from_gelu(tensor):
            role = "ffn_out"
        elif feeds_gelu(nodes[0].output[0]):
            role = "ffn_in"
        else:
            role = "attn_out"
        for node in nodes:
            roles[node.name] = (role, counters[role])
        counters[role] += 1
    return roles


# --- steps ----------------------------------------------------------------------------------


def fuse(fp32_path: Path, out_path: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """ONNX Runtime's transformer fusions for the CPU; returns the fused op counts."""
    from onnxruntime.transformers import optimizer

    optimized = optimizer.optimize_model(
        str(fp32_path),
        model_type="bert",
        num_heads=num_heads,
        hidden_size=hidden_size,
        opt_level=1,
        use_gpu=False,
    )
    optimized.save_model_to_file(str(out_path))
    stats = optimized.get_fused_operator_statistics()
    return {k: int(v) for k, v in stats.items() if v}


def activation_absmax(
    model_path: Path, tensors: Sequence[str], feeds: Sequence[dict[str, np.ndarray]]
) -> dict[str, np.ndarray]:
    """Per-channel (last axis) max |x| of `tensors` over the feeds."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    have = {o.name for o in model.graph.output}
    for name in tensors:
        if name not in have:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    out: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(tensors, session.run(list(tensors), feed), strict=True):
            peak = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
            out[name] = peak if name not in out else np.maximum(out[name], peak)
    return out


def smooth(
    model_path: Path,
    out_path: Path,
    feeds: Sequence[dict[str, np.ndarray]],
    roles: Sequence[Role] = SMOOTH_ROLES,
    alpha: float = SMOOTH_ALPHA,
) -> int:
    """SmoothQuant rescaling of the weight nodes with the given roles; returns how many
    activation tensors were rescaled."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    role_of = classify(model)
    groups = {
        tensor: nodes
        for tensor, nodes in _weight_consumers(model).items()
        if role_of[nodes[0].name][0] in roles
    }
    absmax = activation_absmax(model_path, list(groups), feeds)
    initializers = {i.name: i for i in model.graph.initializer}
    inserted: list[tuple[int, Any]] = []
    position = {id(n): index for index, n in enumerate(model.graph.node)}
    for k, (tensor, nodes) in enumerate(groups.items()):
        weights = {n.input[1]: numpy_helper.to_array(initializers[n.input[1]]) for n in nodes}
        if len({w.shape[0] for w in weights.values()}) != 1:
            continue
        w_max = np.max([np.abs(w).max(axis=1) for w in weights.values()], axis=0)
        a_max = absmax[tensor].astype(np.float64)
        s = np.clip(a_max, 1e-5, None) ** alpha / np.clip(w_max, 1e-5, None) ** (1 - alpha)
        s = np.where(a_max > 0, s, 1.0)
        s = s / np.exp(np.mean(np.log(s)))  # geometric mean 1 keeps magnitudes familiar
        for name, w in weights.items():
            scaled = (w * s[:, None]).astype(np.float32)
            initializers[name].CopyFrom(numpy_helper.from_array(scaled, name))
        scale_name, smoothed = f"smooth_inv_scale_{k}", f"{tensor}_smoothed"
        model.graph.initializer.append(
            numpy_helper.from_array((1.0 / s).astype(np.float32), scale_name)
        )
        mul = onnx.helper.make_node("Mul", [tensor, scale_name], [smoothed], f"smooth_mul_{k}")
        for node in nodes:
            node.input[0] = smoothed
        inserted.append((min(position[id(n)] for n in nodes), mul))
    for index, node in sorted(inserted, key=lambda item: -item[0]):
        model.graph.node.insert(index, node)
    onnx.save(model, str(out_path))
    return len(inserted)


# --- the recipe -----------------------------------------------------------------------------


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    calibration_texts: Sequence[str],
    tokenizer_json: Path,
    *,
    num_heads: int,
    hidden_size: int,
    max_length: int,
    keep_fp32: Sequence[tuple[Role, int]] = KEEP_FP32,
    smooth_alpha: float = SMOOTH_ALPHA,
) -> QuantizeReport:
    """Write the int8 graph of `fp32_path` to `out_path` (see the module doc).

    keep_fp32: (role, layer) pairs left unquantised; a negative layer counts from the end.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if not calibration_texts:
        raise ExportError("int8 needs calibration texts")
    started = time.perf_counter()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bertdot-int8-") as scratch:
        fused = Path(scratch) / "fused.onnx"
        fused_ops = fuse(fp32_path, fused, num_heads, hidden_size)
        if not fused_ops.get("Attention"):
            notes.append("no Attention fusion: the unfused graph's MatMuls were quantised")
        inputs = [i.name for i in onnx.load(str(fused), load_external_data=False).graph.input]
        feeds = calibration_feeds(calibration_texts, tokenizer_json, inputs, max_length)
        smoothed = Path(scratch) / "smoothed.onnx"
        smoothed_nodes = smooth(fused, smoothed, feeds, SMOOTH_ROLES, smooth_alpha)
        model = onnx.load(str(smoothed), load_external_data=False)
        roles = classify(model)
        layers = 1 + max((layer for _, layer in roles.values()), default=-1)
        wanted = {(role, layer % layers if layers else layer) for role, layer in keep_fp32}
        kept = sorted(name for name, role_layer in roles.items() if role_layer in wanted)
        quantize_dynamic(
            str(smoothed),
            str(out_path),
            per_channel=True,
            reduce_range=False,
            weight_type=QuantType.QUInt8,
            op_types_to_quantize=["MatMul", "Attention"],
            nodes_to_exclude=kept,
            # The optimizer's graph lacks some value_info types the quantiser needs.
            extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    return QuantizeReport(
        fused_ops=fused_ops,
        smoothed_nodes=smoothed_nodes,
        kept_fp32=kept,
        quantized_nodes=len(roles) - len(kept),
        weight_type="uint8",
        smooth_alpha=smooth_alpha,
        calibration_texts=len(calibration_texts),
        seconds=round(time.perf_counter() - started, 1),
        notes=notes,
    )
