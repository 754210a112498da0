"""`bertdot eval`: MRR@10, nDCG@10 and Recall of a served or in-process model on a dataset.

Argument parsing only is light; the model stack, ir-measures and the client are imported
when the command runs, so `bertdot --help` works on a client-only install.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bertdot.cli.extras import require_extra

SCOREDDOCS = "scoreddocs"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure retrieval or re-ranking effectiveness on a labelled dataset",
        description="Evaluate against a running server (--target) or in process (--index and "
        "--model) on a BEIR folder or an ir_datasets id. Retrieval by default; re-ranking of a "
        "candidate run with --candidates.",
    )
    p.add_argument(
        "--dataset", required=True, metavar="DIR|ID", help="BEIR folder, or an ir_datasets id"
    )
    p.add_argument(
        "--split", metavar="NAME", help="qrels/<split>.tsv to use (default: test, or the only one)"
    )
    where = p.add_argument_group("system under test (--target, or --model [--index])")
    where.add_argument(
        "--target", metavar="HOST:PORT", help="HOST:PORT of a running bertdot server"
    )
    where.add_argument(
        "--index", type=Path, metavar="DIR", help="index directory (in-process retrieval)"
    )
    where.add_argument(
        "--model", type=Path, metavar="ARTIFACT", help="artifact directory (in process)"
    )
    where.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    where.add_argument("--precision", help="fp32, fp16 or int8 (default: by device)")
    where.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (all)")
    where.add_argument("--token", help="bearer token for the server")
    where.add_argument("--tls", action="store_true", help="connect with TLS")
    where.add_argument("--root-cert", help="PEM CA file to trust (implies --tls)")
    where.add_argument("--timeout", type=float, default=600.0, help="seconds per call (600)")
    p.add_argument(
        "--candidates",
        metavar="RUN",
        help=f"re-rank this TREC run (qid Q0 docid rank score tag); '{SCOREDDOCS}' takes the "
        "ir_datasets id's own (BM25 top-1000 for MS MARCO)",
    )
    p.add_argument(
        "--k",
        type=int,
        default=1000,
        help="retrieval depth / candidates; Recall@N needs k >= N and is left out otherwise (1000)",
    )
    p.add_argument("--ef", type=int, help="HNSW ef (default: the index's; raised to k)")
    p.add_argument(
        "--rel-threshold", type=int, default=1, help="binarise at this label (TREC-DL: 2) (1)"
    )
    p.add_argument("--reference", action="store_true", help="also rank with PyTorch fp32")
    p.add_argument(
        "--reference-model", metavar="PATH", help="checkpoint (default: the artifact's source id)"
    )
    p.add_argument("--reference-device", default="auto", help="torch device (auto)")
    p.add_argument("--batch-size", type=int, default=64, help="texts per encoder batch (64)")
    p.add_argument("--json", type=Path, metavar="OUT", help="write the metrics as JSON here")
    p.add_argument(
        "--save-run", type=Path, metavar="OUT", help="write the produced run (TREC format) here"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(handler=run)


def _fail(message: object) -> int:
    print(f"bertdot eval: error: {message}", file=sys.stderr)
    return 2


def _usage_error(args: argparse.Namespace) -> str | None:
    if args.target and (args.index or args.model):
        return "give --target, or --model/--index, not both"
    if not args.target and not args.model:
        return "give --target HOST:PORT, or --model ARTIFACT (with --index for retrieval)"
    if not args.target and not args.index and not args.candidates:
        return "in-process retrieval needs --index (or re-rank with --candidates)"
    if args.k < 1 or (args.ef is not None and args.ef < 1):
        return "--k and --ef must be positive"
    return None


def _system(args: argparse.Namespace, dataset: Any) -> Any:
    from bertdot.cli.eval.systems import LocalSystem, RemoteSystem

    progress = not args.no_progress
    if args.target:
        from bertdot.client.sync import Client

        tls = args.tls or bool(args.root_cert)
        client = Client(
            args.target, timeout=args.timeout, token=args.token, tls=tls,
            root_certificates=args.root_cert,
        )  # fmt: skip
        return RemoteSystem(client, dataset.corpus, dataset.name, progress=progress)
    from bertdot.server.encoding.encoder import Encoder
    from bertdot.server.index.index import Index

    encoder = Encoder(
        args.model, device=args.device, precision=args.precision, intra_op_threads=args.threads
    )
    index = None
    if args.index:
        index = Index.open(
            args.index,
            expected_fingerprint=encoder.fingerprint,
            expected_similarity=encoder.similarity,
        )
    return LocalSystem(encoder, index, dataset.corpus, dataset.name, args.batch_size, progress)


def _candidates(args: argparse.Namespace, dataset: Any) -> dict[str, list[str]]:
    from bertdot.cli.eval.data import DatasetError, read_run, top_candidates

    if args.candidates == SCOREDDOCS and not Path(args.candidates).exists():
        if dataset.scoreddocs is None:
            raise DatasetError(dataset.name, None, "this dataset ships no candidate run")
        first_stage = dataset.scoreddocs()
    else:
        first_stage = read_run(args.candidates)
    candidates = top_candidates(first_stage, args.k)
    missing = sum(1 for qid in dataset.queries if not candidates.get(qid))
    if missing:
        print(
            f"warning: {missing} judged queries have no candidates (they score 0)", file=sys.stderr
        )
    return candidates


def _reference(args: argparse.Namespace, system: Any, dataset: Any, candidates: Any) -> Any:
    from bertdot.cli.eval.data import DatasetError
    from bertdot.cli.eval.reference import reference_rerank, reference_retrieve
    from bertdot.cli.eval.systems import candidate_texts
    from bertdot.export.reference import ReferenceEncoder

    if dataset.corpus is None:
        raise DatasetError(dataset.name, None, "--reference needs the corpus (corpus.jsonl)")
    encoder = ReferenceEncoder.load(system.spec(), args.reference_model, args.reference_device)
    progress = not args.no_progress
    if candidates is None:
        return reference_retrieve(
            encoder, dataset.corpus, dataset.queries, args.k, args.batch_size, progress
        )
    return reference_rerank(
        encoder,
        dataset.queries,
        candidates,
        lambda: candidate_texts(dataset.corpus, candidates, dataset.name),
        args.batch_size,
        progress,
    )


def _known_errors() -> tuple[type[Exception], ...]:
    """Errors meant for the user: one line, exit status 2."""
    from bertdot.client.errors import BertdotError
    from bertdot.export.errors import ExportError
    from bertdot.server.index.index import IndexLoadError

    # ValueError covers DatasetError, CorpusError and ArtifactError; RuntimeError is ONNX
    # Runtime failing to load; ImportError carries the extra to install.
    return (
        ValueError,
        OSError,
        RuntimeError,
        ImportError,
        IndexLoadError,
        ExportError,
        BertdotError,
    )


def run(args: argparse.Namespace) -> int:
    require_extra("eval", "ir_measures")
    problem = _usage_error(args)
    if problem:
        return _fail(problem)
    if not args.target:
        require_extra("server", "onnxruntime", "tokenizers", "hnswlib")
    from bertdot.cli.eval.data import write_run
    from bertdot.cli.eval.datasets import load_dataset
    from bertdot.cli.eval.metrics import delta, evaluate, table

    system = None
    try:
        dataset = load_dataset(args.dataset, args.split)
        candidates = _candidates(args, dataset) if args.candidates else None
        system = _system(args, dataset)  # after the files: a bad one fails before model load
        if candidates is None:
            produced = system.retrieve(dataset.queries, args.k, args.ef)
        else:
            produced = system.rerank(dataset.queries, candidates)
        if args.save_run:
            write_run(produced, args.save_run)
        metrics = evaluate(dataset.qrels, produced, args.rel_threshold, args.k)
        reference = None
        if args.reference:
            reference_run = _reference(args, system, dataset, candidates)
            reference = evaluate(dataset.qrels, reference_run, args.rel_threshold, args.k)
    except _known_errors() as exc:
        return _fail(exc)
    finally:
        _close(system)
    mode = "re-ranking" if candidates is not None else f"retrieval (k={args.k})"
    print(f"{dataset.name}: {len(dataset.queries)} judged queries, {mode}, "
          f"relevant at label >= {args.rel_threshold}")  # fmt: skip
    print(table(metrics, reference))
    if args.json:
        out: dict[str, Any] = dict(metrics)
        if reference is not None:
            out["reference"] = reference
            out["delta"] = delta(metrics, reference)
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


def _close(system: Any) -> None:
    if system is None:
        return
    closable = getattr(system, "client", None) or getattr(system, "index", None)
    if closable is not None:
        closable.close()
