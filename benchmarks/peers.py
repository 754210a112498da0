"""bertdot beside the embedding servers people would use instead, in one run.

    python benchmarks/peers.py                 # 5 rounds: ~6 minutes (plus installs the first time)
    python benchmarks/peers.py --quick         # smoke run: 1 round, 1,000 passages, 2 s blocks
    python benchmarks/peers.py --peers fastembed,triton --bertdot-precision int8

Contenders, all on all-MiniLM-L6-v2 and the same fp32 ONNX graph (bertdot's export):

- bertdot: the real `bertdot serve` over an index of generated passages built by `bertdot
  index build`; unary Search (k=10) and one SearchStream per client;
- fastembed (0.9.1), in process, in a worker process of its own;
- Triton through PyTriton (0.7.0, tritonserver 2.51), gRPC, dynamic batching;
- infinity-emb (0.0.78, optimum engine), HTTP/JSON.

Each peer is installed into a virtual environment of its own under `--cache`/peers (made on
the first run, reused while its pins hold); none of them is a dependency of bertdot. Every
server is loaded by the same closed-loop client (`peers/load.py`): c=1 latency, then 16
concurrent single-query clients' throughput. Rounds alternate the contenders (the order
rotated each round); medians over rounds, ratios against bertdot within the run, each
contender's vectors checked against sentence-transformers, and the CPU other processes took
during every block. Writes `results/peers-minilm.json` and `.md`; the modules under `peers/`
do the work (see `peers/__init__.py`).
"""

from __future__ import annotations

import argparse
import hashlib
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import load_average, row_cosines, wait_for_quiet, write_report
from encoder import DEFAULT_CACHE, prepare
from peers.contenders import (
    HERE,
    FastembedWorker,
    PeerServer,
    Workload,
    free_port,
    offline_env,
    run_load,
)
from peers.model import peer_model_dir
from peers.report import render_markdown, summarize, summary_lines, targets
from peers.venvs import SPECS, Venv, ensure_venv
from server_processes import ServerProcess, bertdot_command, error_text

from server import run_record, write_inputs

PEERS = ("fastembed", "triton", "infinity")
K = 10  # what load.py asks bertdot's Search for
MIN_COSINE = 0.999  # fp32 everywhere; bertdot int8 is held to its export gate instead
LABELS = {
    "bertdot": ("bertdot", "gRPC (bertdot.v1 stubs)"),
    "fastembed": ("fastembed", "in process"),
    "triton": ("Triton (PyTriton)", "gRPC (tritonclient)"),
    "infinity": ("infinity-emb", "HTTP/JSON"),
}
Block = Callable[[], dict[str, Any]]


# --- inputs -------------------------------------------------------------------------------------


def build_index(
    artifact: Path, corpus: Path, passages: int, folder: Path, seed: int, rebuild: bool
) -> dict[str, Any]:
    """An index of the generated passages, every one encoded by `bertdot index build`,
    cached by artifact fingerprint, passage count and seed."""
    from bertdot.server.encoding.artifact import load_manifest

    fingerprint = load_manifest(artifact).fingerprint
    path = folder / f"index-minilm-{fingerprint[:12]}-{passages}-s{seed}"
    if (path / "manifest.json").is_file() and not rebuild:
        return {"path": str(path), "passages": passages, "cached": True}
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(path, ignore_errors=True)
    print(f"  building the index: bertdot index build, {passages:,} passages", flush=True)
    started = time.perf_counter()
    command = [*bertdot_command(), "index", "build", "--model", str(artifact), "--corpus"]
    command += [str(corpus), "--out", str(partial), "--device", "cpu", "--no-progress"]
    subprocess.run(command, check=True)
    partial.rename(path)
    build_s = round(time.perf_counter() - started, 1)
    return {"path": str(path), "passages": passages, "cached": False, "build_s": build_s}


def reference_vectors(checkpoint: Path, queries: Path, folder: Path) -> Path:
    """sentence-transformers' vectors of the queries, cached by queries and checkpoint."""
    key = hashlib.sha256(queries.read_bytes() + str(checkpoint).encode()).hexdigest()[:12]
    out = folder / f"reference-{key}.npy"
    if not out.is_file():
        print("  sentence-transformers reference vectors", flush=True)
        command = [sys.executable, str(HERE / "reference.py"), str(checkpoint), str(queries)]
        subprocess.run([*command, str(out)], check=True, env=offline_env())
    return out


def check_vectors(reference: Path, candidate: Path, floor: float) -> dict[str, Any]:
    ref, got = np.load(reference).astype(np.float64), np.load(candidate).astype(np.float64)
    if ref.shape != got.shape:
        return {"ok": False, "error": f"shape {got.shape}, reference {ref.shape}"}
    cosines = row_cosines(ref, got)
    return {
        "n": len(cosines),
        "min_cos": round(float(cosines.min()), 6),
        "mean_cos": round(float(cosines.mean()), 6),
        "floor": floor,
        "ok": bool(cosines.min() >= floor),
    }


def min_cosine(contender: str, bertdot_precision: str) -> float:
    if contender == "bertdot" and bertdot_precision == "int8":
        from bertdot.export.pipeline import INT8_GATE

        return INT8_GATE
    return MIN_COSINE


# --- contenders ---------------------------------------------------------------------------------


class Contenders:
    """Starts the contenders (each stopped on leaving, whatever happened) and hands out their
    blocks: name -> {block kind: a call that measures it}."""

    def __init__(self, args: argparse.Namespace, stack: ExitStack, workload: Workload) -> None:
        self.args, self.stack, self.workload = args, stack, workload
        self.info: dict[str, dict[str, Any]] = {}
        self.blocks: dict[str, dict[str, Block]] = {}
        self.vectors: dict[str, Callable[[Path], object]] = {}

    def _served(self, name: str, python: Path, client: str, target: str, pid: int) -> None:
        def block(mode: str, kind: str = client) -> Block:
            return lambda: run_load(python, kind, target, self.workload, mode, pid)

        self.blocks[name] = {"c1": block("c1"), "concurrent": block("concurrent")}
        if name == "bertdot":
            self.blocks[name]["concurrent-stream"] = block("concurrent", "bertdot-stream")
        self.vectors[name] = lambda out: run_load(
            python, client, target, self.workload, "vectors", pid, out
        )

    def start_bertdot(self, artifact: Path, index: Path, log: Path) -> None:
        arguments = ["--model", str(artifact), "--index", str(index), "--device", "cpu"]
        arguments += ["--precision", self.args.bertdot_precision, "--read-only"]
        server = self.stack.enter_context(ServerProcess(arguments, log))
        self.info["bertdot"] = {"command": shlex.join(server.command), "log": str(log)}
        self.info["bertdot"]["startup_s"] = round(server.wait_ready(self.args.ready_timeout), 1)
        self._served("bertdot", Path(sys.executable), "bertdot", server.target, server.pid)

    def start_fastembed(self, venv: Venv, model_dir: Path, queries: Path, log: Path) -> None:
        worker = FastembedWorker(venv.python, model_dir, queries, log)
        self.stack.callback(worker.stop)
        self.info["fastembed"] = {"command": shlex.join(worker.argv), "log": str(log)}
        self.info["fastembed"]["startup_s"] = worker.start()
        n, clients, duration = (
            self.workload.c1_requests,
            self.workload.clients,
            self.workload.duration_s,
        )
        self.blocks["fastembed"] = {
            "c1": lambda: worker.ask(cmd="c1", n=n),
            "concurrent": lambda: worker.ask(cmd="concurrent", clients=clients, duration=duration),
        }
        self.vectors["fastembed"] = lambda out: worker.ask(cmd="vectors", out=str(out))

    def start_triton(self, venv: Venv, model_dir: Path, log: Path) -> None:
        http, grpc, metrics = free_port(), free_port(), free_port()
        argv = [str(venv.python), str(HERE / "server_pytriton.py"), "--model-dir", str(model_dir)]
        argv += ["--grpc-port", str(grpc), "--http-port", str(http)]
        argv += ["--metrics-port", str(metrics)]
        ready = f"http://127.0.0.1:{http}/v2/models/minilm/ready"
        self._start_peer("triton", venv, argv, ready, log, f"127.0.0.1:{grpc}", venv.python)

    def start_infinity(self, venv: Venv, model_dir: Path, log: Path) -> None:
        port = free_port()
        argv = [str(venv.python), str(HERE / "server_infinity.py"), "--model-dir", str(model_dir)]
        argv += ["--port", str(port)]
        target = f"http://127.0.0.1:{port}"
        # The client needs only the standard library and numpy: the project's interpreter
        # drives it, as it drives bertdot's.
        self._start_peer(
            "infinity", venv, argv, f"{target}/health", log, target, Path(sys.executable)
        )

    def _start_peer(
        self,
        name: str,
        venv: Venv,
        argv: list[str],
        ready_url: str,
        log: Path,
        target: str,
        client_python: Path,
    ) -> None:
        server = PeerServer(argv, ready_url, log)
        self.stack.callback(server.stop)
        self.info[name] = {"command": shlex.join(argv)}
        self.info[name]["log"] = str(log)
        self.info[name]["startup_s"] = server.start(self.args.ready_timeout)
        self._served(name, client_python, name, target, server.pid)


def measure_block(name: str, kind: str, call: Block, round_no: int) -> dict[str, Any]:
    record: dict[str, Any] = {"round": round_no, "contender": name, "block": kind}
    started = time.perf_counter()
    try:
        result = call()
    except Exception as exc:  # one failed block is reported; the run goes on
        result = {"error": error_text(exc)}
    # The whole block, the load client's start-up and connections included.
    record["wall_s"] = round(time.perf_counter() - started, 1)
    if "error" in result:
        return record | {"value": None, "error": result["error"]}
    if kind == "c1":
        record["value"] = result["c1"]["p50_ms"]
        record["latency"] = result["c1"]
    else:
        record["value"] = result["qps"]
        record |= {
            k: result[k]
            for k in ("completed", "errors", "error_examples", "latency")
            if k in result
        }
    record["machine"] = result.get("machine")
    return record


def run_rounds(contenders: Contenders, args: argparse.Namespace) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = []
    quiet: list[float | None] = []
    order = list(contenders.blocks)
    for round_no in range(1, args.rounds + 1):
        quiet.append(wait_for_quiet(args.quiet_wait))
        shift = (round_no - 1) % len(order)
        for name in order[shift:] + order[:shift]:
            kinds = list(contenders.blocks[name])
            if round_no % 2 == 0 and "concurrent-stream" in kinds:  # stream first every other round
                kinds = ["c1", "concurrent-stream", "concurrent"]
            for kind in kinds:
                record = measure_block(name, kind, contenders.blocks[name][kind], round_no)
                blocks.append(record)
                cpu = record.get("machine") or {}
                shown = record.get("error") or record["value"]
                print(
                    f"  round {round_no} {name} {kind}: {shown} "
                    f"(others {cpu.get('others_cores')} cores)",
                    flush=True,
                )
    return {"blocks": blocks, "others_cores_before_rounds": quiet}


def measure(args: argparse.Namespace, data: dict[str, Any], venvs: dict[str, Venv]) -> None:
    """Everything after the venvs; fills `data` as it goes."""
    root = args.cache / "peers"
    run_dir = root / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"minilm: the artifact under {args.cache}", flush=True)
    checkpoint, artifact = prepare("minilm", args.cache, args.rebuild)
    model_dir = peer_model_dir(checkpoint, artifact, root / "model" / "minilm-onnx")
    data["model"] = {
        "checkpoint": str(checkpoint),
        "artifact": str(artifact),
        "peer_model_dir": str(model_dir),
    }
    corpus, _, queries, _ = write_inputs(root / "inputs", args.passages, args.queries, args.seed)
    data["index"] = build_index(artifact, corpus, args.passages, root, args.seed, args.rebuild)
    reference = reference_vectors(checkpoint, queries, run_dir)
    workload = Workload(queries, args.c1_requests, args.clients, args.client_procs, args.duration)
    with ExitStack() as stack:
        contenders = Contenders(args, stack, workload)
        data["contenders"] = contenders.info
        print("starting the contenders", flush=True)
        contenders.start_bertdot(artifact, Path(data["index"]["path"]), run_dir / "bertdot.log")
        shown = ("onnxruntime-gpu", "onnxruntime", "grpcio", "hnswlib", "numpy")
        versions = data["machine"]["versions"]
        contenders.info["bertdot"]["versions"] = {k: versions[k] for k in shown if k in versions}
        starts: dict[str, Callable[[Venv, Path], None]] = {
            "fastembed": lambda venv, log: contenders.start_fastembed(
                venv, model_dir, queries, log
            ),
            "triton": lambda venv, log: contenders.start_triton(venv, model_dir, log),
            "infinity": lambda venv, log: contenders.start_infinity(venv, model_dir, log),
        }
        for name, venv in venvs.items():
            try:
                starts[name](venv, run_dir / f"{name}.log")
            except Exception as exc:  # the other contenders are still worth measuring
                contenders.info.setdefault(name, {})["error"] = error_text(exc)
            contenders.info[name]["versions"] = venv.key_versions(SPECS[name])
        for name, info in contenders.info.items():
            label, transport = LABELS[name]
            info |= {"label": label, "transport": transport}
            state = info.get("error") or f"ready after {info['startup_s']} s"
            print(f"  {name}: {state}", flush=True)
        print("vectors against sentence-transformers", flush=True)
        for name, make in contenders.vectors.items():
            out = run_dir / f"vectors-{name}.npy"
            out.unlink(missing_ok=True)
            try:
                make(out)
                floor = min_cosine(name, args.bertdot_precision)
                contenders.info[name]["vectors"] = check_vectors(reference, out, floor)
            except Exception as exc:
                contenders.info[name]["vectors"] = {"ok": False, "error": error_text(exc)}
            print(f"  {name}: {contenders.info[name]['vectors']}", flush=True)
        print(f"{args.rounds} rounds", flush=True)
        data |= run_rounds(contenders, args)
    data["summary"] = summarize(data["blocks"])
    data["targets"] = targets(data["summary"])


# --- main ---------------------------------------------------------------------------------------


# Run lengths: a full run's, and a smoke run's (`--quick`); a flag given explicitly wins.
FULL = {"rounds": 5, "c1_requests": 100, "duration": 5.0, "passages": 10_000, "quiet_wait": 30.0}
QUICK = {"rounds": 1, "c1_requests": 30, "duration": 2.0, "passages": 1000, "quiet_wait": 5.0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])

    def sized(flag: str, kind: type, text: str) -> None:
        key = flag[2:].replace("-", "_")
        shown = f"{text} (default {FULL[key]:,}; --quick: {QUICK[key]:,})"
        parser.add_argument(flag, type=kind, help=shown)

    parser.add_argument(
        "--peers",
        default=",".join(PEERS),
        help=f"comma-separated, of {', '.join(PEERS)} (default: all)",
    )
    parser.add_argument(
        "--bertdot-precision",
        choices=("fp32", "int8"),
        default="fp32",
        help="bertdot serve --precision (default fp32; the peers always run fp32)",
    )
    sized("--rounds", int, "rounds; medians are taken over them")
    sized("--c1-requests", int, "timed c=1 requests a block")
    sized("--duration", float, "seconds of a concurrent block")
    parser.add_argument(
        "--clients", type=int, default=16, help="concurrent single-query clients (default 16)"
    )
    parser.add_argument(
        "--client-procs",
        type=int,
        default=2,
        help="load-client processes the concurrent clients are split over (default 2)",
    )
    sized("--passages", int, "generated passages in bertdot's index")
    parser.add_argument("--queries", type=int, default=200, help="generated queries (default 200)")
    sized("--quiet-wait", float, "seconds to wait, at most, before each round for a quiet CPU")
    parser.add_argument(
        "--ready-timeout", type=float, default=300.0, help="seconds to ready (default 300)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: shorter, see above")
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"the artifact; the peers' venvs, model folder, index and logs under peers/ "
        f"(default {DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="report folder (default benchmarks/results)",
    )
    parser.add_argument(
        "--rebuild", action="store_true", help="re-export the artifact, rebuild the index"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated texts")
    args = parser.parse_args(argv)
    for key, default in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = set(args.peers) - set(PEERS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")
    return args


def _stop_on_sigterm() -> None:
    """SIGTERM ends the run through the `finally` blocks, so every contender is stopped."""

    def handler(signum: int, frame: object) -> None:
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    _stop_on_sigterm()
    started = time.perf_counter()
    settings = {
        k: getattr(args, k)
        for k in (
            "peers",
            "bertdot_precision",
            "rounds",
            "clients",
            "client_procs",
            "passages",
            "queries",
            "seed",
        )
    }
    settings |= {
        "c1_requests": args.c1_requests,
        "duration_s": args.duration,
        "k": K,
        "quiet_wait_s": args.quiet_wait,
        "min_cosine": MIN_COSINE,
    }
    data = run_record("peers.py", argv, settings)
    try:
        print(f"peer venvs under {args.cache / 'peers'}", flush=True)
        venvs = {name: ensure_venv(SPECS[name], args.cache / "peers") for name in args.peers}
        data["venvs"] = {
            name: {
                "path": str(v.path),
                "reused": v.reused,
                "install_s": v.install_s,
                "size_mb": v.size_mb,
            }
            for name, v in venvs.items()
        }
        measure(args, data, venvs)
    except Exception as exc:
        data["error"] = error_text(exc)
        print(f"run failed: {data['error']}", flush=True)
    data["machine"]["load_average_end"] = load_average()
    data["wall_s"] = round(time.perf_counter() - started, 1)
    stem = "peers-minilm" + ("-quick" if args.quick else "")
    for path in write_report(args.out, stem, data, render_markdown(data)):
        print(f"wrote {path}")
    print("\n".join(summary_lines(data)))
    failed = "error" in data or any(
        "error" in info or not info.get("vectors", {}).get("ok", False)
        for info in data.get("contenders", {}).values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
