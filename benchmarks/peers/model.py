"""The model folder every peer reads: the checkpoint's tokenizer and configuration files with
bertdot's exported fp32 graph as onnx/model.onnx, so that every contender runs the very same
ONNX graph and the differences are serving (tokeniser, batching, transport), not the model.

The graph is the plain `last_hidden_state` export (inputs input_ids, attention_mask,
token_type_ids); each peer pools (mean) and normalises itself, as bertdot does.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

FILES = (
    "config.json",
    "config_sentence_transformers.json",
    "modules.json",
    "sentence_bert_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "1_Pooling/config.json",
)


def _place(source: Path, target: Path) -> None:
    """A hard link where the file systems allow (the files are 90 MB), else a copy; replaced
    when it is not the same file any more (a re-exported artifact)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        if target.samefile(source):
            return
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def peer_model_dir(checkpoint: Path, artifact: Path, folder: Path) -> Path:
    """`folder`, laid out as fastembed, the PyTriton server and infinity's view expect."""
    for name in FILES:
        if (checkpoint / name).is_file():
            _place(checkpoint / name, folder / name)
    _place(artifact / "encoder.fp32.onnx", folder / "onnx" / "model.onnx")
    return folder
