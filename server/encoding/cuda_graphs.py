"""Captured CUDA graphs for the batch shapes a server runs most (the CUDA provider only).

A lone query on the CUDA provider spends most of its time in ONNX Runtime's work on the host
(one kernel launch and its bookkeeping per node), not on the GPU: 1.33-1.41 ms for 1 × 8,
16 or 32 tokens on an H100 (`benchmarks/results/encoder-seed-cuda.md`), flat in the length.
ONNX Runtime can capture a whole run as one CUDA graph and replay it with one launch, but a
graph is fixed to its input shapes and to the device addresses of its inputs and output.

So each bucket of (rows, tokens) gets its own graph id and its own device buffers, bound
once. A batch is padded up to the smallest bucket that holds it, its ids and mask are copied
into that bucket's buffers, and the bucket's graph replays. Padded tokens are masked and
padded rows are dropped, so a text's vector does not depend on the bucket (checked at
capture against the plain session, below). Batches beyond every bucket return None and run
on the plain session.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from bertdot.server.encoding.pooling import normalize
from bertdot.server.encoding.tokenization import Batch

log = logging.getLogger(__name__)

ROW_BUCKETS = (1, 2, 4, 8, 16, 32)
TOKEN_BUCKETS = (16, 32, 64, 128)
# ONNX Runtime runs a new graph id normally twice (allocations settle), captures it on the
# third run; the fourth is the first replay, and the one checked against the plain session.
RUNS_TO_CAPTURE = 3
MIN_COSINE = 0.999  # a replay farther than this from the plain session turns graphs off
OUTPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True, order=True)
class Bucket:
    rows: int
    tokens: int


def buckets_for(max_rows: int, max_tokens: int) -> list[Bucket]:
    """The buckets for batches of up to `max_rows` texts and `max_tokens` tokens each."""
    rows = [r for r in ROW_BUCKETS if r < max_rows] + [max_rows]
    tokens = [t for t in TOKEN_BUCKETS if t < max_tokens] + [min(max_tokens, TOKEN_BUCKETS[-1])]
    return sorted({Bucket(r, t) for r in rows for t in tokens})


def smallest_bucket(buckets: Iterable[Bucket], rows: int, tokens: int) -> Bucket | None:
    """The bucket with the fewest padded tokens that holds `rows` × `tokens`, if any."""
    fitting = [b for b in buckets if b.rows >= rows and b.tokens >= tokens]
    return min(fitting, key=lambda b: (b.rows * b.tokens, b.tokens), default=None)


def pad_to(batch: Batch, bucket: Bucket, pad_id: int) -> Batch:
    """`batch` padded to the bucket's shape.

    Padded tokens are masked. A padded row holds one unmasked [PAD] token rather than none:
    a fully masked row divides by zero in some attention kernels, and its output is dropped.
    """
    rows, tokens = batch.shape
    input_ids = np.full((bucket.rows, bucket.tokens), pad_id, dtype=np.int64)
    attention_mask = np.zeros((bucket.rows, bucket.tokens), dtype=np.int64)
    input_ids[:rows, :tokens] = batch.input_ids
    attention_mask[:rows, :tokens] = batch.attention_mask
    attention_mask[rows:, 0] = 1
    return Batch(input_ids, attention_mask)


@dataclass
class _Slot:
    """One bucket's graph: its buffers, bound once, and the run option that names it."""

    bucket: Bucket
    inputs: dict[str, ort.OrtValue]
    output: ort.OrtValue
    binding: ort.IOBinding
    options: ort.RunOptions


class GraphReplayer:
    """Runs batches that fit a bucket by replaying that bucket's captured graph.

    `session` must have been created with the CUDA provider's `enable_cuda_graph` option
    (on another device the same calls run the session plainly, which is how the padding and
    binding are tested without a GPU). One replay at a time: the buffers are shared.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        buckets: Sequence[Bucket],
        *,
        dim: int,
        pad_id: int,
        device: str = "cuda",
    ) -> None:
        self._session = session
        self._pad_id = pad_id
        self._lock = threading.Lock()
        output = session.get_outputs()[0]
        dtype = OUTPUT_TYPES[output.type]
        names = [i.name for i in session.get_inputs()]
        self._slots: dict[Bucket, _Slot] = {}
        for graph_id, bucket in enumerate(sorted(buckets), start=1):  # 0 is ONNX Runtime's
            # One array per input: on the CPU an OrtValue shares the array's memory.
            inputs = {
                name: ort.OrtValue.ortvalue_from_numpy(
                    np.zeros((bucket.rows, bucket.tokens), dtype=np.int64), device, 0
                )
                for name in names
            }
            shape = [bucket.rows, bucket.tokens, dim]
            out = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, device, 0)
            binding = session.io_binding()
            for name, value in inputs.items():
                binding.bind_ortvalue_input(name, value)
            binding.bind_ortvalue_output(output.name, out)
            options = ort.RunOptions()
            options.add_run_config_entry("gpu_graph_id", str(graph_id))
            self._slots[bucket] = _Slot(bucket, inputs, out, binding, options)

    @property
    def buckets(self) -> list[Bucket]:
        return list(self._slots)

    def run(self, batch: Batch) -> np.ndarray | None:
        """Hidden states (rows, tokens, dim) of `batch`, or None where no bucket holds it."""
        rows, tokens = batch.shape
        bucket = smallest_bucket(self._slots, rows, tokens)
        if bucket is None:
            return None
        padded = pad_to(batch, bucket, self._pad_id)
        slot = self._slots[bucket]
        with self._lock:
            slot.inputs["input_ids"].update_inplace(padded.input_ids)
            slot.inputs["attention_mask"].update_inplace(padded.attention_mask)
            self._session.run_with_iobinding(slot.binding, slot.options)
            hidden = slot.output.numpy()  # a host copy: the buffer is reused by the next run
        return hidden[:rows, :tokens]

    def capture(self, ids: np.ndarray) -> None:
        """Run every bucket until its graph is captured, on rows cut from the token ids `ids`
        (one long tokenized text: what is captured is the shape, not the values)."""
        for bucket in self._slots:
            batch = _filled(bucket, ids)
            for _ in range(RUNS_TO_CAPTURE):
                self.run(batch)

    def check(self, ids: np.ndarray, plain: ort.InferenceSession) -> float:
        """The lowest cosine, over every bucket, between a replay and the plain session on
        the same inputs. Inputs differ from those captured, so a replay that did not read
        its buffers afresh shows here."""
        names = [i.name for i in plain.get_inputs()]
        worst = 1.0
        for bucket in self._slots:
            batch = _filled(bucket, np.roll(ids, 3))
            replayed = self.run(batch)
            assert replayed is not None  # the batch has the bucket's shape
            expected = np.asarray(plain.run(None, batch.feeds(names))[0])
            rows = bucket.rows
            worst = min(
                worst, _lowest_cosine(replayed.reshape(rows, -1), expected.reshape(rows, -1))
            )
        return worst


def _filled(bucket: Bucket, ids: np.ndarray) -> Batch:
    row = np.resize(ids, bucket.tokens).astype(np.int64)
    input_ids = np.tile(row, (bucket.rows, 1))
    return Batch(input_ids, np.ones_like(input_ids))


def _lowest_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float((normalize(a) * normalize(b)).sum(axis=1).min())
