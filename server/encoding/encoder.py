"""Text → vectors on ONNX Runtime, as the artifact's manifest prescribes (no torch, no grpc)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from bertdot.server.encoding.artifact import TOKENIZER_NAME, load_manifest
from bertdot.server.encoding.cuda_graphs import MIN_COSINE, GraphReplayer, buckets_for
from bertdot.server.encoding.pooling import normalize, pool
from bertdot.server.encoding.runtime import (
    CUDA,
    Device,
    SessionChoice,
    open_graph_session,
    open_session,
)
from bertdot.server.encoding.tokenization import Batch, TextTokenizer, TokenizedText

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    """Vectors (float32, one row per text) and what tokenization did to each text."""

    vectors: np.ndarray
    token_counts: np.ndarray
    truncated: np.ndarray


class Encoder:
    """Encodes texts with an exported artifact.

    Texts are tokenized without padding; each ONNX Runtime call gets a batch padded only
    to its longest member. Large inputs are sorted by length before batching so padding
    is not wasted, and results are returned in input order. On the CUDA provider, batches
    of up to `batch_size` texts and 128 tokens replay captured CUDA graphs instead
    (`cuda_graphs.py`; `cuda_graphs=False` turns that off).
    """

    def __init__(
        self,
        artifact_dir: str | Path,
        *,
        device: Device = "auto",
        precision: str | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        batch_size: int = 32,
        cuda_graphs: bool = True,
    ) -> None:
        self.root = Path(artifact_dir)
        self.manifest = load_manifest(self.root)
        self.tokenizer = TextTokenizer(self.root / TOKENIZER_NAME, self.manifest.max_length)
        choice = open_session(
            self.root,
            self.manifest,
            device=device,
            precision=precision,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
        )
        self._session = choice.session
        self.provider = choice.provider
        self.precision = choice.precision
        self.provider_reason = choice.reason
        self.batch_size = batch_size
        self._input_names = [i.name for i in self._session.get_inputs()]
        self._output_name = self._session.get_outputs()[0].name
        self._graphs: GraphReplayer | None = None
        self.graphs_note = ""
        if self.provider == CUDA and cuda_graphs:
            self._graphs, self.graphs_note = self._capture_graphs(choice)

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def similarity(self) -> str:
        return self.manifest.similarity

    @property
    def fingerprint(self) -> str:
        return self.manifest.fingerprint

    def describe(self) -> str:
        graphs = f"; {self.graphs_note}" if self.graphs_note else ""
        return f"{self.provider} {self.precision} ({self.provider_reason}{graphs})"

    @property
    def graph_buckets(self) -> int:
        """How many (rows, tokens) shapes replay a captured CUDA graph (0: none)."""
        return len(self._graphs.buckets) if self._graphs is not None else 0

    def _capture_graphs(self, choice: SessionChoice) -> tuple[GraphReplayer | None, str]:
        """Capture the buckets' graphs and check them against the plain session; on any
        failure the encoder runs every shape on the plain session, as without graphs."""
        buckets = buckets_for(self.batch_size, self.manifest.max_length)
        warm = self.tokenizer.tokenize([" ".join(["graph"] * self.manifest.max_length)])[0].ids
        try:
            graphs = GraphReplayer(
                open_graph_session(choice), buckets, dim=self.dim, pad_id=self.tokenizer.pad_id
            )
            graphs.capture(warm)
            cosine = graphs.check(warm, self._session)
        except Exception as exc:  # ONNX Runtime raises its own types; any failure means off
            reason = next(iter(str(exc).strip().splitlines()), "")[:200]
            log.warning("CUDA graphs off: capture failed: %s", exc)
            return None, f"CUDA graphs off: {type(exc).__name__} {reason}".rstrip()
        if cosine < MIN_COSINE:
            log.warning("CUDA graphs off: a replay's cosine to the plain run was %.6f", cosine)
            return None, f"CUDA graphs off: replay cosine {cosine:.6f}"
        return graphs, f"CUDA graphs for {len(buckets)} shapes (replay cosine {cosine:.6f})"

    def tokenize(self, texts: Sequence[str]) -> list[TokenizedText]:
        return self.tokenizer.tokenize(texts)

    def encode_tokenized(self, items: Sequence[TokenizedText]) -> np.ndarray:
        """One ONNX Runtime call for `items` as one padded batch; returns pooled vectors."""
        batch = self.tokenizer.pad(items)
        hidden = self._run(batch)
        vectors = pool(hidden, batch.attention_mask, self.manifest.pooling)
        if self.manifest.similarity == "cosine":
            vectors = normalize(vectors)
        return vectors

    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> Encoded:
        if not texts:
            empty = np.zeros((0, self.dim), dtype=np.float32)
            return Encoded(empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))
        size = batch_size or self.batch_size
        items = self.tokenize(texts)
        order = sorted(range(len(items)), key=lambda i: items[i].length)
        vectors = np.empty((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(order), size):
            rows = order[start : start + size]
            vectors[rows] = self.encode_tokenized([items[i] for i in rows])
        counts = np.array([item.length for item in items], dtype=np.int64)
        truncated = np.array([item.truncated for item in items], dtype=bool)
        return Encoded(vectors, counts, truncated)

    def _run(self, batch: Batch) -> np.ndarray:
        if self._graphs is not None:
            hidden = self._graphs.run(batch)
            if hidden is not None:
                return hidden
        feeds = batch.feeds(self._input_names)
        if self.provider == CUDA:
            return self._run_bound(feeds)
        return np.asarray(self._session.run([self._output_name], feeds)[0])

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """IO binding on CUDA: inputs copied to the device once, output fetched once."""
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(array, "cuda", 0))
        binding.bind_output(self._output_name, "cpu")
        self._session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])
