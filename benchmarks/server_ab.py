"""Two builds of the server side by side: this checkout against an earlier commit, both
serving the same index, loaded in alternating rounds by the same `bertdot bench`.

    python benchmarks/server_ab.py --baseline HEAD~1 --model minilm --concurrency 1
    python benchmarks/server_ab.py --baseline daa492f --model seed --concurrency 1,32 --rounds 6

A change that moves latency by a few percent is lost in the drift between two runs on a
shared machine, minutes apart. Here both servers run at once (read-only, on the index and
generated queries of `server.py`), and each round loads one and then the other, the order
alternating, so drift hits both alike. The baseline is the commit's own code (`git archive`,
installed without dependencies into a folder under the cache and put first on its server's
PYTHONPATH); the load generator is this checkout's for both. Per mode and concurrency the
report gives each build's median over the rounds of client p50 (or q/s above c=1) and of the
server's stage p50s, the ratio, and in how many rounds this checkout did better. Writes
`server-ab-<model>.json` and `.md` under `--out`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import shlex
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table, wait_for_quiet, write_report
from encoder import prepare
from server_processes import ServerProcess, error_text, run_bench

from server import K, prepare_index, run_record, write_inputs
from server import parse_args as server_args

BUILDS = ("baseline", "this checkout")
STAGES = ("queue", "encode", "search", "total")


def install_baseline(rev: str, cache: Path) -> tuple[str, Path]:
    """The commit's full hash, and a folder holding its `bertdot` package (cached by hash)."""
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    site = cache / f"ab-baseline-{commit[:12]}"
    if (site / "bertdot").is_dir():
        return commit, site
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "src.tar"
        subprocess.run(["git", "archive", "-o", str(archive), commit], check=True)
        with tarfile.open(archive) as tar:
            tar.extractall(Path(tmp) / "src", filter="data")
        partial = site.with_name(site.name + ".partial")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "--target", str(partial), str(Path(tmp) / "src")],
            check=True,
        )  # fmt: skip
        partial.rename(site)
    return commit, site


def baseline_console(site: Path) -> str:
    """The baseline's own `bertdot` entry point ("module:function"), from its installed
    metadata: the console moved between layouts (bertdot.client.cli, bertdot.cli.main)."""
    for dist in importlib.metadata.distributions(path=[str(site)]):
        for entry in dist.entry_points:
            if entry.group == "console_scripts" and entry.name == "bertdot":
                return entry.value
    raise RuntimeError(f"the baseline under {site} has no bertdot console script")


def summarize(bench: dict[str, Any]) -> dict[str, float]:
    """The round's figure of merit (p50 ms at c=1, q/s above) and the server's stage p50s."""
    row = {stage: float(bench["server_ms"][stage]["p50"]) for stage in STAGES}
    row["p50_ms"] = float(bench["latency_ms"]["p50"])
    row["qps"] = float(bench["throughput_qps"])
    return row


def compare(rounds: list[dict[str, dict[str, float]]], concurrency: int) -> dict[str, Any]:
    """Medians per build, the ratio this checkout / baseline, and this checkout's wins."""
    key = "p50_ms" if concurrency == 1 else "qps"
    medians = {
        build: {f: statistics.median(r[build][f] for r in rounds) for f in rounds[0][build]}
        for build in BUILDS
    }
    better = (lambda new, old: new < old) if key == "p50_ms" else (lambda new, old: new > old)
    wins = sum(better(r[BUILDS[1]][key], r[BUILDS[0]][key]) for r in rounds)
    return {
        "figure": key,
        "medians": medians,
        "ratio": medians[BUILDS[1]][key] / medians[BUILDS[0]][key],
        "wins": wins,
        "rounds": len(rounds),
    }


def measure(args: argparse.Namespace, data: dict[str, Any]) -> None:
    commit, site = install_baseline(args.baseline, args.cache)
    data["baseline"] = {"rev": args.baseline, "commit": commit}
    _, artifact = prepare(args.model, args.cache, args.rebuild)
    folder = args.cache / f"server-ab-{args.model}-{args.device}"
    corpus, texts, queries, _ = write_inputs(folder, args.passages, args.queries, args.seed)
    index = prepare_index(artifact, corpus, texts, args)
    data["index"] = index
    serve = ["--model", str(artifact), "--index", index["path"], "--device", args.device]
    serve += ["--precision", args.precision, "--read-only", *shlex.split(args.server_args)]
    baseline_env = {**os.environ, "PYTHONPATH": str(site)}  # ahead of this checkout's install
    module, function = baseline_console(site).split(":")
    program = [sys.executable, "-c", f"from {module} import {function}; {function}()"]
    servers = {
        BUILDS[0]: ServerProcess(serve, folder / "baseline.log", [*program, "serve"], baseline_env),
        BUILDS[1]: ServerProcess(serve, folder / "checkout.log"),
    }
    rows: dict[str, list[dict[str, dict[str, float]]]] = {}
    with servers[BUILDS[0]], servers[BUILDS[1]]:
        for name, server in servers.items():
            print(f"{name}: {shlex.join(server.command)}", flush=True)
            server.wait_ready(args.ready_timeout)
        wait_for_quiet(args.quiet_wait)
        for n in range(args.ab_rounds):
            order = BUILDS if n % 2 == 0 else BUILDS[::-1]
            for concurrency in args.concurrency:
                for mode in args.modes:
                    entry: dict[str, dict[str, float]] = {}
                    for name in order:
                        out = folder / f"bench-{name.replace(' ', '-')}-{mode}-c{concurrency}.json"
                        target, load = servers[name].target, (args.duration, args.warmup, K)
                        bench = run_bench(target, mode, concurrency, load, queries, out)
                        if "error" in bench:
                            raise RuntimeError(f"{name} {mode} c={concurrency}: {bench['error']}")
                        entry[name] = summarize(bench)
                    rows.setdefault(f"{mode} c={concurrency}", []).append(entry)
                    figure = "p50_ms" if concurrency == 1 else "qps"
                    print(
                        f"  round {n + 1} {mode} c={concurrency}: "
                        + ", ".join(f"{b} {entry[b][figure]:.3f}" for b in BUILDS),
                        flush=True,
                    )
    data["rows"] = {
        label: {"rounds": r, **compare(r, int(label.split("c=")[1]))} for label, r in rows.items()
    }


def render(data: dict[str, Any]) -> str:
    machine = data["machine"]
    lines = [
        f"# Server A/B: {data['settings']['model']} ({data['settings']['device']})",
        "",
        f"`{data['command']}`: this checkout at commit {data.get('commit')} against "
        f"{data.get('baseline', {}).get('commit', '?')[:12]} "
        f"(`{data.get('baseline', {}).get('rev')}`), on {machine['cpu']}, "
        f"{machine['cores']} cores; run took {data.get('wall_s')} s.",
        "",
    ]
    if "error" in data:
        lines += [f"**The run failed: {data['error']}**", ""]
    table = []
    for label, row in data.get("rows", {}).items():
        old, new = (row["medians"][b] for b in BUILDS)
        figure = "p50 ms" if row["figure"] == "p50_ms" else "q/s"
        table.append(
            [label, figure, f"{old[row['figure']]:.3f}", f"{new[row['figure']]:.3f}",
             f"{row['ratio']:.3f}", f"{row['wins']} of {row['rounds']}",
             " / ".join(f"{old[s]:.3f}" for s in STAGES),
             " / ".join(f"{new[s]:.3f}" for s in STAGES)]
        )  # fmt: skip
    if table:
        headers = ["load", "figure", "baseline", "this checkout", "ratio", "rounds better",
                   "baseline server queue / encode / search / total p50 ms",
                   "this checkout's"]  # fmt: skip
        lines += [markdown_table(headers, table), ""]
        lines.append(
            "Medians over the rounds of each round's figure (client p50 at c=1, q/s above) and "
            "of the server's stage p50s. Ratio: this checkout / baseline. Rounds better: the "
            "rounds in which this checkout did better than the baseline in the same round."
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="the commit to compare with (a git rev)")
    parser.add_argument("--ab-rounds", type=int, default=6, help="rounds (each loads both)")
    known, rest = parser.parse_known_args(argv)
    # The rest are server.py's flags (model, device, concurrency, modes, duration, ...).
    defaults = ["--concurrency", "1", "--duration", "4", "--warmup", "1"]
    args = server_args([*defaults, *rest])
    args.baseline, args.ab_rounds = known.baseline, known.ab_rounds
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    settings = {
        "model": args.model,
        "device": args.device,
        "concurrency": args.concurrency,
        "modes": args.modes,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "rounds": args.ab_rounds,
        "server_args": args.server_args,
    }
    data = run_record("server_ab.py", argv, settings)
    try:
        measure(args, data)
    except Exception as exc:  # the report says what failed, and what was measured before
        data["error"] = error_text(exc)
        print(data["error"], flush=True)
    data["wall_s"] = round(time.perf_counter() - started, 1)
    stem = f"server-ab-{args.model}" + ("-cuda" if args.device == "cuda" else "")
    for path in write_report(args.out, stem, data, render(data)):
        print(f"wrote {path}")
    return 1 if "error" in data else 0


if __name__ == "__main__":
    sys.exit(main())
