"""infinity-emb on its optimum (ONNX Runtime) engine, through its own CLI. Run with the
infinity venv's interpreter:

    server_infinity.py --model-dir DIR --port P [--batch-size 32]

Serves the OpenAI-style POST /embeddings {"model": "minilm", "input": [text]} and GET /health
on 127.0.0.1. The process replaces itself with `infinity_emb v2` (same pid, so SIGTERM reaches
uvicorn directly), its working directory a *view* of DIR (hard links) made for infinity's
quirks, all seen with infinity-emb 0.0.78 and optimum 2.1:

- It globs the model path for *.onnx and hands optimum the path it found as a file name;
  optimum 2.x keeps only files whose *name* equals it, so any path with a folder in it fails
  ("Could not find any ONNX files with target file name .../onnx/model.onnx"). Only
  `--model-id .` with model.onnx at the top of the working directory yields a bare name.
- With several .onnx files its pick depends on glob order: the view holds exactly one.
- `--pooling-method auto` means CLS pooling in the optimum engine, not the mean this model was
  trained with (cosine 0.42-0.57 against sentence-transformers): `mean` is passed.
- Its ONNX Runtime optimisation pass fails under optimum 2.x and falls back to the plain graph
  anyway; `--onnx-disable-optimize` says so up front, and every contender runs the same graph.
- It writes `.infinity_cache/` into the working directory (the view, under the cache folder),
  and sends telemetry unless DO_NOT_TRACK is set.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

KEEP = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling/config.json",
)


def _link(source: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.exists():
        if link.samefile(source):
            return
        link.unlink()
    try:
        os.link(source, link)
    except OSError:  # another file system
        shutil.copy2(source, link)


def make_view(model_dir: Path, view: Path) -> Path:
    """`view`: model_dir's config and tokenizer files with its only ONNX file at the top."""
    view.mkdir(parents=True, exist_ok=True)
    for stale in view.rglob("*.onnx"):
        if stale != view / "model.onnx":
            stale.unlink()
    _link(model_dir / "onnx" / "model.onnx", view / "model.onnx")
    for name in KEEP:
        if (model_dir / name).is_file():
            _link(model_dir / name, view / name)
    return view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()
    view = make_view(model_dir, model_dir.with_name(model_dir.name + "-infinity"))
    environment = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DO_NOT_TRACK="1",
        INFINITY_ANONYMOUS_USAGE_STATS="0",
    )
    cli = Path(sys.executable).with_name("infinity_emb")
    argv = [str(cli), "v2", "--model-id", ".", "--served-model-name", "minilm"]
    argv += ["--engine", "optimum", "--device", "cpu", "--pooling-method", "mean"]
    argv += ["--batch-size", str(args.batch_size), "--host", "127.0.0.1", "--port", str(args.port)]
    argv += ["--no-model-warmup", "--log-level", "warning", "--onnx-disable-optimize"]
    os.chdir(view)
    print("exec:", " ".join(argv), f"(in {view})", flush=True)
    os.execve(str(cli), argv, environment)


if __name__ == "__main__":
    main()
