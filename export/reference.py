"""The PyTorch fp32 reference encoder: what every exported precision and every served
ranking is held to.

Export's parity check encodes its probe texts one at a time (no padding can leak into the
reference); `bertdot eval --reference` encodes whole corpora in length-sorted batches. Both
pool and normalise exactly as the server does. torch and transformers are imported only
when an encoder is built or run (the `export` extra).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bertdot.server.encoding.pooling import normalize, pool

INSTALL_HINT = "the PyTorch reference needs torch and transformers: pip install 'bertdot[export]'"


@dataclass(frozen=True)
class ModelSpec:
    """What the reference must copy from the served model (its manifest or Info)."""

    source: str  # hub id or checkpoint directory
    pooling: str
    similarity: str
    max_length: int


def accepted_inputs(model: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The tokenizer outputs `model.forward` takes: a DistilBERT saved with a BERT tokenizer
    gets `token_type_ids`, which its forward refuses."""
    parameters = inspect.signature(model.forward).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(inputs)
    return {name: value for name, value in inputs.items() if name in parameters}


class ReferenceEncoder:
    """fp32 PyTorch encoding with the pooling and similarity of the served model."""

    def __init__(self, model: Any, tokenizer: Any, spec: ModelSpec, device: str = "cpu") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device

    @classmethod
    def load(
        cls, spec: ModelSpec, model: str | None = None, device: str = "auto"
    ) -> ReferenceEncoder:
        """The checkpoint `model` (default: the spec's source) on `device` ("auto": CUDA
        where usable)."""
        try:
            import torch
            from transformers import AutoModel
        except ImportError:
            raise ImportError(INSTALL_HINT) from None
        from bertdot.export.checkpoint import inspect_checkpoint
        from bertdot.export.tokenizer_file import load_reference_tokenizer

        info = inspect_checkpoint(model or spec.source)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        tokenizer = load_reference_tokenizer(info.model_dir)
        weights = AutoModel.from_pretrained(str(info.model_dir)).float().eval().to(device)
        return cls(weights, tokenizer, spec, device)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Vectors in input order, unit length for cosine models (as the server serves
        them). Batches hold texts of similar length, so padding costs little; `batch_size=1`
        encodes one text at a time."""
        import torch

        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                inputs = self.tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.spec.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**accepted_inputs(self.model, inputs)).last_hidden_state
                mask = inputs["attention_mask"].cpu().numpy()
                out[rows] = pool(hidden.float().cpu().numpy(), mask, self.spec.pooling)
        return normalize(out) if self.spec.similarity == "cosine" else out
