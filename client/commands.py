"""`bertdot search` and `bertdot bench`: the client's commands.

Only the standard library is imported here: `bertdot --help` must stay instant and work
without the client extra. The client, the load generator and its report are imported
by the handlers.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_TARGET = "127.0.0.1:50051"


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _add_common(p: argparse.ArgumentParser) -> None:
    # Environment read when the parser is built, never at import.
    target = os.environ.get("BERTDOT_TARGET", DEFAULT_TARGET)
    p.add_argument("--target", default=target, help=f"server ({target}) [env BERTDOT_TARGET]")
    p.add_argument(
        "--token",
        default=os.environ.get("BERTDOT_TOKEN"),
        help="bearer token sent in the authorization metadata [env BERTDOT_TOKEN]",
    )
    p.add_argument("--tls", action="store_true", help="connect with TLS (system roots unless --ca)")
    p.add_argument("--ca", metavar="PEM", help="CA to verify the server with (implies --tls)")
    p.add_argument("--k", type=_positive(int), default=10, help="hits per query (10)")
    p.add_argument("--ef", type=_positive(int), help="HNSW search breadth (server default)")
    p.add_argument(
        "--timeout", type=_positive(float), default=10.0, help="deadline per call, seconds (10)"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    s = subparsers.add_parser(
        "search",
        help="search one query and print the ranked passages",
        description="Search one query on a bertdot server; prints rank, score, id, title and "
        "text, then the query's token count, truncation and the server's timings.",
    )
    s.add_argument("query", help="the query text")
    _add_common(s)
    s.add_argument(
        "--text",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ask for and show passage texts (default: yes)",
    )
    s.add_argument("--json", action="store_true", help="print the result as JSON")
    s.set_defaults(handler=run_search)

    b = subparsers.add_parser(
        "bench",
        help="load-test a server (closed or open loop, unary or stream)",
        description="Closed loop (--concurrency N requests always outstanding) or open loop "
        "(--rate R queries/s whatever the server does; latency counted from the intended send "
        "time, so queueing is not hidden). Reports percentiles (HDR histogram), throughput, "
        "errors by status code and the server's own timings.",
    )
    _add_common(b)
    load = b.add_argument_group("load")
    load.add_argument(
        "--concurrency", type=_positive(int), help="closed loop: requests in flight (1)"
    )
    load.add_argument(
        "--connections",
        type=_positive(int),
        default=1,
        help="TCP connections to spread the load over: one per worker process of a "
        "`bertdot serve --workers N` reaches them all (1)",
    )
    load.add_argument(
        "--processes",
        type=_positive(int),
        default=1,
        help="load-generating processes sharing the concurrency (or rate) and connections: "
        "one Python process drives a few thousand queries/s; no live progress line (1)",
    )
    load.add_argument("--rate", type=_positive(float), help="open loop: queries per second")
    load.add_argument(
        "--arrivals", choices=("constant", "poisson"), default="constant", help="open loop gaps"
    )
    load.add_argument(
        "--max-in-flight",
        type=_positive(int),
        default=1024,
        help="open loop: sends beyond this many unanswered are dropped (1024)",
    )
    load.add_argument("--mode", choices=("unary", "stream"), default="unary", help="RPC (unary)")
    load.add_argument("--duration", type=_positive(float), default=10.0, help="seconds (10)")
    load.add_argument(
        "--warmup", type=float, default=1.0, help="seconds before measuring, excluded (1)"
    )
    load.add_argument("--queries", metavar="FILE", help="one query per line (built-in list)")
    load.add_argument("--seed", type=int, help="seed of the Poisson arrivals")
    out = b.add_argument_group("output")
    out.add_argument("--json", metavar="OUT", help="write the summary as JSON")
    out.add_argument("--plot", metavar="OUT.png", help="plot latency over time and distribution")
    out.add_argument("--quiet", action="store_true", help="no live progress line")
    b.set_defaults(handler=run_bench, parser=b, extras=("client",))


def _channel_args(args: argparse.Namespace) -> dict[str, Any]:
    return {"tls": bool(args.tls or args.ca), "root_certificates": args.ca, "token": args.token}


def run_search(args: argparse.Namespace) -> int:
    from bertdot.client import BertdotError, Client
    from bertdot.client.search_view import render, to_json

    with Client(args.target, timeout=args.timeout, **_channel_args(args)) as client:
        try:
            result = client.search(args.query, k=args.k, ef=args.ef, return_text=args.text)
        except BertdotError as err:
            print(f"bertdot search: {err}", file=sys.stderr)
            return 1
    print(to_json(result) if args.json else render(result, show_text=args.text))
    return 0


def _read_queries(path: str) -> tuple[str, ...]:
    try:
        with open(path, encoding="utf-8") as handle:
            queries = tuple(line.strip() for line in handle if line.strip())
    except OSError as exc:
        raise SystemExit(f"bertdot bench: cannot read --queries: {exc}") from exc
    if not queries:
        raise SystemExit(f"bertdot bench: {path} holds no queries")
    return queries


def run_bench(args: argparse.Namespace) -> int:
    if args.rate is not None and args.concurrency is not None:
        args.parser.error("--rate (open loop) and --concurrency (closed loop) exclude each other")
    if args.warmup < 0:
        args.parser.error("--warmup must not be negative")
    import asyncio

    from bertdot.client.bench import report as bench_report
    from bertdot.client.bench.runner import BenchConfig, run_bench_processes
    from bertdot.client.bench.runner import run_bench as bench

    if args.plot:
        bench_report.require_matplotlib()
    extra = {"queries": _read_queries(args.queries)} if args.queries else {}
    config = BenchConfig(
        target=args.target,
        k=args.k,
        ef=args.ef,
        mode=args.mode,
        concurrency=args.concurrency or 1,
        connections=max(args.connections, args.processes),
        processes=args.processes,
        rate=args.rate,
        arrivals=args.arrivals,
        max_in_flight=args.max_in_flight,
        duration_s=args.duration,
        warmup_s=args.warmup,
        timeout_s=args.timeout,
        seed=args.seed,
        token=args.token,
        tls=bool(args.tls or args.ca),
        ca=args.ca,
        **extra,
    )
    if not config.open_loop and config.concurrency < config.processes:
        args.parser.error("--processes must not exceed --concurrency")
    progress = None  # several processes: each runs its own loop; figures come merged at the end
    if not args.quiet and sys.stdout.isatty() and config.processes == 1:
        progress = bench_report.ProgressLine(sys.stderr)
    try:
        if config.processes > 1:
            result = run_bench_processes(config)
        else:
            result = asyncio.run(bench(config, progress))
    except KeyboardInterrupt:
        print("\nbertdot bench: interrupted", file=sys.stderr)
        return 130
    finally:
        if progress is not None:
            progress.close()
    report = bench_report.summary(result)
    print(bench_report.table(report))
    if args.json:
        bench_report.write_json(report, args.json)
    if args.plot:
        bench_report.plot(result, args.plot)
    if not report["ok"]:
        errors = ", ".join(f"{code} {n:,}" for code, n in report["errors"].items()) or "none"
        print(f"bertdot bench: error: no request succeeded ({errors})", file=sys.stderr)
        return 1
    return 0
