"""Triton Inference Server through PyTriton, serving all-MiniLM-L6-v2 as text in, vector out.
Run with the PyTriton venv's interpreter:

    server_pytriton.py --model-dir DIR --grpc-port P --http-port P2 --metrics-port P3
                       [--max-batch 32] [--queue-delay-us 500]

Model "minilm": input "text" BYTES [1] (UTF-8), output "embedding" FP32 [384], mean pooled and
L2-normalised. The infer function tokenises (tokenizers), runs one ONNX Runtime session (CPU,
default threads) on DIR/onnx/model.onnx and pools; Triton's dynamic batcher groups requests.
Requests travel tritonserver -> Python-backend stub -> this process: that hop is part of what
Triton through PyTriton costs. Binds 127.0.0.1 only; ready when HTTP
/v2/models/minilm/ready answers 200; stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sysconfig
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _prefer_own_libpython() -> None:
    """Triton's Python-backend stub links libpython3.X.so dynamically. Left alone, the loader
    can take the distribution's copy (Debian's 3.11.2) while the stub imports this
    interpreter's standard library (pyenv's 3.11.7), and model load fails ("'_thread.RLock'
    object has no attribute '_recursion_count'"). tritonserver and the stub inherit this
    process's environment, so this interpreter's LIBDIR goes first on LD_LIBRARY_PATH."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        if libdir not in paths:
            os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


_prefer_own_libpython()

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402
from tokenizers import Tokenizer  # noqa: E402

MAX_LENGTH = 256  # sentence-transformers' max_seq_length for this model, and bertdot's


def make_encoder(model_dir: Path) -> Callable[[list[str]], np.ndarray]:
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # The shipped tokenizer.json pads every input to 128 tokens; pad to the batch's longest.
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    session = ort.InferenceSession(
        str(model_dir / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    takes_types = "token_type_ids" in {i.name for i in session.get_inputs()}

    def encode(texts: list[str]) -> np.ndarray:
        encoded = tokenizer.encode_batch(texts)
        ids = np.asarray([e.ids for e in encoded], dtype=np.int64)
        mask = np.asarray([e.attention_mask for e in encoded], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if takes_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = session.run(["last_hidden_state"], feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(1) / np.clip(weights.sum(1), 1e-9, None)
        return (pooled / np.linalg.norm(pooled, axis=1, keepdims=True)).astype(np.float32)

    return encode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--queue-delay-us", type=int, default=500)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    # PyTriton stops tritonserver and removes its workspace only on KeyboardInterrupt; a plain
    # SIGTERM would end this process and orphan tritonserver and the stub.
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    encode = make_encoder(args.model_dir)

    @batch
    def infer(text: np.ndarray) -> dict[str, np.ndarray]:
        # text: an object array [B, 1] of UTF-8 bytes
        return {"embedding": encode([row[0].decode("utf-8") for row in text])}

    config = TritonConfig(
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        grpc_address="127.0.0.1",
        http_address="127.0.0.1",
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name="minilm",
            infer_func=infer,
            inputs=[Tensor(name="text", dtype=bytes, shape=(1,))],
            outputs=[Tensor(name="embedding", dtype=np.float32, shape=(384,))],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us),
            ),
            strict=True,
        )
        triton.serve()  # until SIGINT or SIGTERM


if __name__ == "__main__":
    main()
