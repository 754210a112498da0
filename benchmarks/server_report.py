"""The markdown report of benchmarks/server.py, from the same dict as its JSON."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import markdown_table


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value / (1 << 20):,.1f} MiB"


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def render_runs(runs: list[dict[str, Any]]) -> list[str]:
    rows: list[list[object]] = []
    for run in runs:
        bench, cpu = run["bench"], run["cpu_cores"]
        if "error" in bench:
            rows.append([run["mode"], run["concurrency"], "", bench["error"]])
            continue
        latency, server_ms = bench["latency_ms"], bench["server_ms"]
        errors = sum(bench["errors"].values())
        rows.append(
            [
                run["mode"],
                run["concurrency"],
                f"{run.get('connections', 1)} / {run.get('client_processes', 1)}",
                f"{bench['throughput_qps']:,.1f}",
                f"{errors:,}" + (f" ({', '.join(bench['errors'])})" if errors else ""),
                _num(latency["p50"]),
                _num(latency["p90"]),
                _num(latency["p99"]),
                _num(server_ms["queue"]["p50"]),
                _num(server_ms["encode"]["p50"]),
                _num(server_ms["search"]["p50"]),
                _num(server_ms["total"]["p50"]),
                _num(latency["p50"] - server_ms["total"]["p50"]),
                _num(bench["mean_batch_size"], 1),
                f"{cpu['server']:.2f} / {cpu['client']:.2f} / {_num(cpu['others'])}",
            ]
        )
    headers = [
        "mode",
        "c",
        "connections / client processes",
        "q/s",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "server queue p50",
        "encode p50",
        "search p50",
        "server total p50",
        "client − server p50",
        "mean batch",
        "cores: server / client / others",
    ]
    return [markdown_table(headers, rows)]


def render_markdown(data: dict[str, Any]) -> str:
    machine, model = data["machine"], data["model"]
    where = "GPU" if data["settings"]["device"] == "cuda" else "CPU"
    lines = [
        f"# Server benchmark: {model['name']} ({where})",
        "",
        model["description"],
        "",
        f"`{data['command']}` at commit {data.get('commit')} — {machine['cpu']}, "
        f"{machine['cores']} cores, "
        + ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
        + f"; load average {machine['load_average_start']} at start, "
        f"{machine.get('load_average_end')} at end; run took {data.get('wall_s')} s.",
        "",
    ]
    if "error" in data:
        lines += [f"**The run failed: {data['error']}**", ""]
    server = data.get("server", {})
    settings = data["settings"]
    if server:
        lines += [
            f"Server: `{server['command']}` (ready in {server.get('ready_s', '–')} s). Load: "
            f"`bertdot bench` closed loop, {settings['duration_s']:g} s measured after "
            f"{settings['warmup_s']:g} s warm-up per row, k={settings['k']}, the server's "
            "default ef, "
            f"{settings['queries']} generated queries cycled.",
            "",
        ]
    for part, label in ((server, "Server"), (data.get("in_process", {}), "In-process")):
        if part.get("error"):
            lines += [f"**{label}: {part['error']}**", ""]
    if data.get("peer", {}).get("error"):
        lines += [f"**Peer: {data['peer']['error']}**", ""]
    if data.get("runs"):
        lines += ["## Under load (client latency, ms; the server's own timings beside it)", ""]
        lines += render_runs(data["runs"])
        lines += [
            "",
            "client − server p50: what the RPC, the load generator and the event loops add "
            "(the difference of two medians, a rough split). Cores: CPU used during the row by "
            "the server, by the load generator (`bertdot bench`, a Python process on the same "
            "machine) and by other processes.",
            "",
        ]
        lines += render_rpc_floor(data)
    lines += render_baselines(data)
    lines += render_targets(data)
    lines += render_memory(data)
    return "\n".join(lines) + "\n"


def render_rpc_floor(data: dict[str, Any]) -> list[str]:
    floor = data.get("rpc_floor")
    if not floor:
        return []
    if "error" in floor:
        return [f"The round trip alone was not measured: {floor['error']}", ""]
    parts = [
        f"{mode} " + ("–" if "error" in f["bench"] else f"{f['bench']['latency_ms']['p50']:.3f} ms")
        for mode, f in floor.items()
    ]
    return [
        "The round trip alone, the same client at c=1 against `echo_server.py` (bertdot's wire "
        "contract, ten fixed hits, no work): p50 " + ", ".join(parts) + ". Of a c=1 row's "
        "client − server p50, this much is the RPC and the load generator themselves; the rest "
        "is the server's handler around its timed core.",
        "",
    ]


def render_baselines(data: dict[str, Any]) -> list[str]:
    baselines = data.get("baselines")
    if not baselines:
        return []
    peer = data.get("peer", {})
    labels = {
        "in-process": f"in-process: our Encoder + Index.search ({data['settings']['precision']})",
        "in-process encode": "in-process: Encoder.encode alone (tokenize, run, pool)",
        "in-process search": "in-process: Index.search alone, back to back (caches warm)",
        "peer": f"peer: {peer.get('description', '')} + numpy exact dot product",
        "peer, torch search": f"peer: {peer.get('description', '')} + PyTorch exact dot product",
    }
    rows = [
        [
            labels[name],
            _num(s["median_ms"]),
            _num(s["p90_ms"]),
            _num(s["p99_ms"]),
            f"{s['loop_qps']:,.1f}",
            " / ".join(_num(m) for m in s["phase_median_ms"]),
            " / ".join(_num(q, 1) for q in s["phase_loop_qps"]),
            s["n"],
        ]
        for name, s in baselines.items()
    ]
    others = " and ".join(_num(p["cpu_cores"]["others"]) for p in data["baseline_phases"])
    lines = [
        "## Baselines: one query at a time, in this process",
        "",
        markdown_table(
            [
                "",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "loop q/s",
                "p50 before / after sweep",
                "loop q/s before / after",
                "n",
            ],
            rows,
        ),
        "",
        "Same queries, contenders interleaved in blocks of 8 calls (2 untimed first), once "
        "before and once after the server sweep; loop q/s = calls / their summed time. "
        f"Other processes used {others} cores during the two phases.",
    ]
    if peer.get("parity"):
        same, k = peer["parity"], data["settings"]["k"]
        lines.append(
            f"Same answers: over {same['queries']} of the queries the peer's vectors match ours "
            f"(min cosine {same['min_cosine']:.6f}) and its exact top-{k} overlaps our HNSW "
            f"top-{k} (the server's search, default ef) by {same[f'overlap_at_{k}']:.3f}."
        )
    if peer.get("fallback_reason"):
        lines.append(f"sentence-transformers was unusable ({peer['fallback_reason']}).")
    return [*lines, ""]


def render_targets(data: dict[str, Any]) -> list[str]:
    if not data.get("targets"):
        return []
    rows = []
    for entry in data["targets"].values():
        unary, stream = entry["unary"], entry["stream"]
        verdict = "not measured" if unary["met"] is None else ("met" if unary["met"] else "NOT met")
        bound = f"{'≤' if entry['comparison'] == '<=' else '≥'} {entry['bound']:g}"
        rows.append([entry["ratio"], _num(unary["value"]), _num(stream["value"]), bound, verdict])
    return [
        "## Targets",
        "",
        markdown_table(["ratio", "unary", "stream", "target", "verdict (unary)"], rows),
        "",
        "Judged on unary RPCs (the stream column is for comparison). Each baseline counts with "
        "its faster phase (p50 and loop q/s; noise here only ever adds time); the peer's q/s is "
        "its single-query loop. The issue's peer searches in numpy; the same search in PyTorch is "
        "also given because, in one process on the CPU, numpy's OpenBLAS threads and PyTorch's "
        "OpenMP threads spin after each call and slow each other down: a target against the "
        "peer holds only where it holds against both.",
        "",
    ]


def render_memory(data: dict[str, Any]) -> list[str]:
    index = data.get("index")
    if not index:
        return []
    server = data.get("server", {})
    ready = server.get("memory_when_ready", {})
    end = server.get("memory_at_end", {})
    growth = index.get("rss_growth_bytes_per_passage")
    return [
        "## Memory and index",
        "",
        f"- Server resident memory: {_mib(ready.get('VmRSS'))} when ready, peak (VmHWM) "
        f"{_mib(end.get('VmHWM'))} at the end of the sweep.",
        f"- Index: {index['passages']:,} passages; {index['method']}"
        + f", built in {index['build_s']} s"
        + (" (by an earlier run, cached)" if index.get("cached") else "")
        + ".",
        f"- Index files: graph {_mib(index['graph_bytes'])} "
        f"({index['graph_bytes_per_passage']:,} B per passage), passage store "
        f"{_mib(index['store_bytes'])}; {index['files_bytes_per_passage']:,} B per passage "
        "together. Opening it grew this process's resident memory by "
        + ("–" if growth is None else f"{growth:,} B")
        + " per passage.",
        "",
    ]
