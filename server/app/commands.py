"""`bertdot serve`: flags (or BERTDOT_* variables) → ServerConfig → a serving process."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

ENV_PREFIX = "BERTDOT_"


def _env_default(name: str, default: Any = None) -> Any:
    """The BERTDOT_<NAME> variable, read once when the parser is built (not at import)."""
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"), default)


def _int_in(low: int, high: int | None = None) -> Any:
    """An argparse type: an integer within low..high (flags and BERTDOT_* variables alike)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({bound})")
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must not be negative")
    return value


PORT = _int_in(0, 65535)
POSITIVE = _int_in(1)
NON_NEGATIVE = _int_in(0)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve an artifact (and an index) over gRPC",
        description="Serve bertdot.v1.Retrieval with health, reflection and Prometheus metrics. "
        "Every flag can also be set as a BERTDOT_<FLAG> environment variable "
        "(e.g. BERTDOT_PORT=50051); flags win.",
    )

    def add(flag: str, help: str, default: Any = None, **kwargs: Any) -> None:
        name = flag.lstrip("-")
        env = _env_default(name, default)
        p.add_argument(
            flag,
            default=env,
            help=f"{help} [env {ENV_PREFIX}{name.upper().replace('-', '_')}]",
            **kwargs,
        )

    add(
        "--model",
        "artifact directory (from bertdot export)",
        required=_env_default("model") is None,
    )
    add("--index", "index directory (from bertdot index build); omit to serve encode/rerank only")
    add("--host", "address to listen on", "127.0.0.1")
    add("--port", "gRPC port (0 picks a free one)", 50051, type=PORT)
    add(
        "--metrics-port",
        "Prometheus metrics HTTP port (unset: no metrics endpoint; with --workers, worker i "
        "uses PORT+i)",
        type=PORT,
    )
    add("--device", "auto, cpu or cuda", "auto", choices=("auto", "cpu", "cuda"))
    add(
        "--precision",
        "fp32, fp16 or int8 (default: fp16 on CUDA, fp32 on CPU)",
        choices=("fp32", "fp16", "int8"),
    )
    add(
        "--threads",
        "ONNX Runtime intra-op threads (0 = all cores; with --workers N, cores / N each)",
        0,
        type=NON_NEGATIVE,
    )
    p.add_argument(
        "--no-cuda-graphs",
        action="store_true",
        default=_env_flag("no-cuda-graphs"),
        help="on CUDA, run every batch plainly instead of replaying captured CUDA graphs for "
        "batches of up to --max-batch-size texts and 128 tokens "
        f"[env {ENV_PREFIX}NO_CUDA_GRAPHS=1]",
    )
    add("--max-batch-size", "most queries per encoder call", 32, type=POSITIVE)
    add("--max-batch-tokens", "most padded tokens per encoder call", 8192, type=POSITIVE)
    add(
        "--bulk-slice-tokens",
        "most padded tokens per slice of bulk work (Encode of several texts, Rerank's "
        "candidates, Upsert): waiting queries go between two slices",
        768,
        type=POSITIVE,
    )
    add(
        "--max-wait-us",
        "longest a query waits for a batch to fill, in µs (0: run as soon as the encoder is "
        "free; batches still form from the queries that arrive while it is busy)",
        0,
        type=NON_NEGATIVE,
    )
    add(
        "--max-queue",
        "queries waiting beyond this are refused (RESOURCE_EXHAUSTED)",
        512,
        type=POSITIVE,
    )
    add("--tls-cert", "PEM certificate chain (enables TLS)")
    add("--tls-key", "PEM private key")
    add("--tls-client-ca", "PEM CA: clients must present a certificate it signed")
    add("--token", "bearer token required in the authorization metadata (health stays open)")
    add(
        "--workers",
        "serving processes sharing the port (Linux SO_REUSEPORT; each loads its own model and "
        "graph; the kernel spreads connections across them, so clients need several "
        "connections to use them all)",
        1,
        type=POSITIVE,
    )
    add("--grace", "seconds to finish in-flight requests on SIGTERM", 10.0, type=_seconds)
    add(
        "--max-message-bytes",
        "largest request or response message",
        16 * 1024 * 1024,
        type=_int_in(1024, 2**31 - 1),
    )
    writes = p.add_argument_group("writes (Upsert, Delete)")
    writes.add_argument(
        "--read-only",
        action="store_true",
        default=_env_flag("read-only"),
        help="refuse Upsert and Delete with FAILED_PRECONDITION (replicas that only serve); "
        "an index folder this process cannot write is served read-only anyway "
        f"[env {ENV_PREFIX}READ_ONLY=1]",
    )
    writes.add_argument(
        "--snapshot-interval",
        type=float,
        default=_env_default("snapshot-interval"),
        metavar="S",
        help="save the graph every S seconds when writes arrived, so a restart replays at "
        f"most S seconds of writes (default: only at shutdown) [env {ENV_PREFIX}SNAPSHOT_INTERVAL]",
    )
    writes.add_argument(
        "--follow-interval",
        type=float,
        default=_env_default("follow-interval", 0.5),
        metavar="S",
        help="a read-only server checks every S seconds for writes another process made to "
        f"its index and applies them (0: never) [env {ENV_PREFIX}FOLLOW_INTERVAL]",
    )
    writes.add_argument(
        "--defer-store-check",
        action="store_true",
        default=_env_flag("defer-store-check"),
        help="check the passage store's pages (SQLite quick_check) in the background after the "
        "server starts, instead of before: for very large stores; a damaged store then turns "
        f"health NOT_SERVING [env {ENV_PREFIX}DEFER_STORE_CHECK=1]",
    )
    writes.add_argument(
        "--rebuild-graph",
        action="store_true",
        default=_env_flag("rebuild-graph"),
        help="rebuild a missing or corrupt graph file from the passage store instead of "
        f"refusing to start [env {ENV_PREFIX}REBUILD_GRAPH=1]",
    )
    p.set_defaults(handler=run, extras=("server",))


def _env_flag(name: str) -> bool:
    value = str(_env_default(name, "")).strip().lower()
    return value in ("1", "true", "yes", "on")


def config_from(args: argparse.Namespace) -> Any:
    from bertdot.server.app.config import BatchingConfig, ServerConfig, TLSConfig

    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise SystemExit("bertdot serve: --tls-cert and --tls-key go together")
        client_ca = Path(args.tls_client_ca) if args.tls_client_ca else None
        for flag, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key),
                           ("--tls-client-ca", client_ca)):  # fmt: skip
            if path is not None and not Path(path).is_file():
                raise SystemExit(f"bertdot serve: error: {flag} {path}: no such file")
        tls = TLSConfig(Path(args.tls_cert), Path(args.tls_key), client_ca)
    return ServerConfig(
        model=Path(args.model),
        index=Path(args.index) if args.index else None,
        host=args.host,
        port=int(args.port),
        metrics_port=None if args.metrics_port is None else int(args.metrics_port),
        device=args.device,
        precision=args.precision,
        intra_op_threads=int(args.threads),
        cuda_graphs=not args.no_cuda_graphs,
        batching=BatchingConfig(
            max_batch_size=int(args.max_batch_size),
            max_batch_tokens=int(args.max_batch_tokens),
            max_wait_us=int(args.max_wait_us),
            max_queue=int(args.max_queue),
            bulk_slice_tokens=int(args.bulk_slice_tokens),
        ),
        tls=tls,
        token=args.token,
        grace_s=float(args.grace),
        max_message_bytes=int(args.max_message_bytes),
        read_only=bool(args.read_only),
        snapshot_interval_s=_interval(args.snapshot_interval),
        rebuild_graph=bool(args.rebuild_graph),
        defer_store_check=bool(args.defer_store_check),
        follow_interval_s=_at_least("--follow-interval", float(args.follow_interval), 0.0),
        workers=int(_at_least("--workers", int(args.workers), 1)),
    )


def _at_least(flag: str, value: float, lowest: float) -> float:
    if value < lowest:
        raise SystemExit(f"bertdot serve: {flag} must be at least {lowest:g}, got {value:g}")
    return value


def _interval(value: Any) -> float | None:
    if value is None:
        return None
    seconds = float(value)
    if seconds <= 0:
        raise SystemExit("bertdot serve: --snapshot-interval must be positive")
    return seconds


def run(args: argparse.Namespace) -> int:
    import asyncio

    from bertdot.server.app.serve import serve_forever
    from bertdot.server.index.index import IndexLoadError

    config = config_from(args)
    try:
        if config.workers > 1:
            from bertdot.server.app.supervisor import serve_workers

            return serve_workers(config)
        return asyncio.run(serve_forever(config))
    # A bad artifact or index (corrupt graph: the message names the repair command, a second
    # writer), a port in use, an unreadable certificate.
    except (OSError, ValueError, IndexLoadError) as exc:
        print(f"bertdot serve: error: {exc}", file=sys.stderr)
        return 2
