"""`bertdot export` argument parsing (light: heavy imports happen when the command runs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _opset(text: str) -> int:
    """The opsets the exporter and ONNX Runtime's transformer tools both handle."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 14 <= value <= 21:
        raise argparse.ArgumentTypeError(f"{value} is out of range (14..21)")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a Hugging Face encoder to a validated ONNX artifact",
        description="Export a Hugging Face DistilBERT/BERT encoder to ONNX (fp32, fp16, int8), "
        "check every precision against PyTorch, and write an artifact directory.",
    )
    parser.add_argument("model", help="hub id or local checkpoint directory")
    parser.add_argument("--out", required=True, type=Path, help="artifact directory to write")
    parser.add_argument(
        "--precisions",
        default="fp32,fp16",
        help="comma-separated: fp32, fp16, int8 (fp32 is always written; default fp32,fp16)",
    )
    parser.add_argument("--max-length", type=int, help="token limit (default: the model's)")
    parser.add_argument(
        "--pooling", choices=("cls", "mean"), help="default: sentence-transformers config, else cls"
    )
    parser.add_argument(
        "--similarity",
        choices=("dot", "cosine"),
        help="default: sentence-transformers config, else dot",
    )
    parser.add_argument(
        "--min-cosine",
        type=float,
        help="refuse int8 (and any precision) whose min cosine vs PyTorch is below this",
    )
    parser.add_argument(
        "--calibration",
        type=Path,
        help="texts to calibrate int8 on: your corpus (.jsonl with title/text, as `index "
        "build` reads it) or one text per line; default: built-in generic texts",
    )
    parser.add_argument("--revision", help="hub revision (branch, tag or commit)")
    parser.add_argument(
        "--opset", type=_opset, default=18, help="ONNX opset, 14 to 21 (default 18)"
    )
    parser.add_argument("--force", action="store_true", help="replace an existing artifact")
    parser.set_defaults(handler=run, extras=("export",))


def run(args: argparse.Namespace) -> int:
    from bertdot.export.errors import ExportError
    from bertdot.export.pipeline import ExportOptions, export_artifact, parse_precisions

    try:
        options = ExportOptions(
            model=args.model,
            out=args.out,
            precisions=parse_precisions(args.precisions),
            max_length=args.max_length,
            pooling=args.pooling,
            similarity=args.similarity,
            min_cosine=args.min_cosine,
            revision=args.revision,
            opset=args.opset,
            force=args.force,
            calibration=args.calibration,
        )
        export_artifact(options)
    except ExportError as exc:
        print(f"bertdot export: error: {exc}", file=sys.stderr)
        return 2
    return 0
