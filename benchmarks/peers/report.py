"""Medians, ratios and targets of `benchmarks/peers.py`, and its markdown, from its blocks."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import markdown_table

DISTURBED_CORES = 0.25  # a block during which others used more than this is flagged
# The targets, all ratios within one run: (key, label, numerator, denominator,
# comparison, bound); a side is (contender, block).
TARGETS = (
    (
        "latency_vs_fastembed",
        "bertdot c=1 p50 / fastembed c=1 p50",
        ("bertdot", "c1"),
        ("fastembed", "c1"),
        "<=",
        1.3,
    ),
    (
        "throughput_vs_infinity",
        "bertdot q/s / infinity q/s, 16 clients",
        ("bertdot", "concurrent"),
        ("infinity", "concurrent"),
        ">=",
        1.5,
    ),
    (
        "throughput_vs_triton",
        "bertdot q/s / Triton q/s, 16 clients",
        ("bertdot", "concurrent"),
        ("triton", "concurrent"),
        ">=",
        1.3,
    ),
)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def summarize(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per contender and block kind: the median over rounds, the rounds, others' cores."""
    summary: dict[str, dict[str, Any]] = {}
    for block in blocks:
        entry = summary.setdefault(block["contender"], {}).setdefault(
            block["block"], {"values": [], "others_cores": []}
        )
        if block.get("value") is not None:
            entry["values"].append(block["value"])
        others = (block.get("machine") or {}).get("others_cores")
        if others is not None:
            entry["others_cores"].append(others)
    for by_block in summary.values():
        for entry in by_block.values():
            entry["median"] = _median(entry["values"])
            entry["rounds"] = len(entry["values"])
    return summary


def value(summary: dict[str, Any], side: tuple[str, str]) -> float | None:
    return summary.get(side[0], {}).get(side[1], {}).get("median")


def targets(summary: dict[str, Any]) -> dict[str, Any]:
    """Each target's ratio and whether it is met (None where a side was not measured); the
    throughput targets are judged on unary Search, SearchStream shown beside."""
    results: dict[str, Any] = {}
    for key, label, mine, theirs, comparison, bound in TARGETS:
        ratio = _ratio(value(summary, mine), value(summary, theirs))
        met = None if ratio is None else (ratio <= bound if comparison == "<=" else ratio >= bound)
        entry = {"ratio": label, "value": ratio, "comparison": comparison, "bound": bound}
        entry["met"] = met
        if mine[1] == "concurrent":
            stream = _ratio(
                value(summary, ("bertdot", "concurrent-stream")), value(summary, theirs)
            )
            entry["stream_value"] = stream
        results[key] = entry
    return results


def _num(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{x:,.{digits}f}"


def _cores(values: list[float]) -> str:
    if not values:
        return "–"
    flag = " ⚠" if max(values) > DISTURBED_CORES else ""
    return f"{statistics.median(values):.2f} / {max(values):.2f}{flag}"


def main_table(data: dict[str, Any]) -> str:
    summary, contenders = data["summary"], data["contenders"]
    mine_p50 = value(summary, ("bertdot", "c1"))
    mine_qps = value(summary, ("bertdot", "concurrent"))
    mine_stream = value(summary, ("bertdot", "concurrent-stream"))
    clients = data["settings"]["clients"]
    rows: list[list[object]] = []
    for name, info in contenders.items():
        if "error" in info:
            rows.append([info["label"], info["transport"], f"failed: {info['error']}"])
            rows[-1] += ["–"] * 6
            continue
        blocks = summary.get(name, {})
        p50 = blocks.get("c1", {}).get("median")
        qps = blocks.get("concurrent", {}).get("median")
        others = [x for b in blocks.values() for x in b["others_cores"]]
        rounds = max((b["rounds"] for b in blocks.values()), default=0)
        vectors = info.get("vectors", {})
        cosine = _num(vectors.get("min_cos"), 6) + ("" if vectors.get("ok", True) else " ✗")
        if name == "bertdot":
            rows.append(
                [
                    "bertdot, unary Search",
                    info["transport"],
                    _num(p50),
                    _num(qps, 1),
                    "1",
                    "1",
                    cosine,
                    _cores(others),
                    rounds,
                ]
            )
            stream = blocks.get("concurrent-stream", {}).get("median")
            rows.append(
                [
                    "bertdot, SearchStream",
                    info["transport"],
                    "–",
                    _num(stream, 1),
                    "–",
                    _num(_ratio(mine_stream, mine_qps)) + " (stream / unary)",
                    cosine,
                    "(above)",
                    rounds,
                ]
            )
            continue
        qps_cell = _num(qps, 1) + (f" ({clients} threads)" if name == "fastembed" else "")
        qps_ratio = f"{_num(_ratio(mine_qps, qps))} / {_num(_ratio(mine_stream, qps))}"
        rows.append(
            [
                info["label"],
                info["transport"],
                _num(p50),
                qps_cell,
                _num(_ratio(mine_p50, p50)),
                qps_ratio,
                cosine,
                _cores(others),
                rounds,
            ]
        )
    headers = [
        "contender",
        "transport",
        "c=1 p50 ms",
        f"{clients} clients q/s",
        "bertdot / it, c=1 p50",
        "bertdot / it, q/s (unary / stream)",
        "vectors: min cosine vs ST",
        "others' cores, median / max",
        "rounds",
    ]
    return markdown_table(headers, rows)


def blocks_table(data: dict[str, Any]) -> str:
    rows = []
    for block in data["blocks"]:
        cpu = block.get("machine") or {}
        shown = block.get("error") or (
            f"{block['value']:,.2f} ms" if block["block"] == "c1" else f"{block['value']:,.1f} q/s"
        )
        if block.get("errors"):
            shown += f" ({block['errors']:,} failed requests: {block['error_examples'][:1]})"
        rows.append(
            [
                block["round"],
                block["contender"],
                block["block"],
                shown,
                _num(cpu.get("server_cores")),
                _num(cpu.get("client_cores")),
                _num(cpu.get("others_cores"))
                + (" ⚠" if (cpu.get("others_cores") or 0) > DISTURBED_CORES else ""),
            ]
        )
    headers = [
        "round",
        "contender",
        "block",
        "result",
        "server cores",
        "client cores",
        "others' cores",
    ]
    return markdown_table(headers, rows)


def summary_lines(data: dict[str, Any]) -> list[str]:
    """The table and the targets: the head of the report, and what the command prints."""
    if not data.get("summary"):
        return []
    lines = [main_table(data), ""]
    lines += ["Targets (ratios within this run; throughput judged on unary Search):", ""]
    for entry in data.get("targets", {}).values():
        met = {True: "met", False: "**NOT met**", None: "not measured"}[entry["met"]]
        stream = entry.get("stream_value")
        beside = f" (SearchStream: {_num(stream)})" if "stream_value" in entry else ""
        lines.append(
            f"- {entry['ratio']} = {_num(entry['value'])}{beside}, target "
            f"{entry['comparison']} {entry['bound']}: {met}"
        )
    return [*lines, ""]


def render_markdown(data: dict[str, Any]) -> str:
    machine, settings = data["machine"], data["settings"]
    lines = [
        "# Peers: bertdot beside fastembed, Triton (PyTriton) and infinity-emb (MiniLM, CPU)",
        "",
        f"`{data['command']}` at commit {data.get('commit')} — {machine['cpu']}, "
        f"{machine['cores']} cores; load average {machine['load_average_start']} at start, "
        f"{machine.get('load_average_end')} at the end; {data.get('wall_s')} s in all.",
        "",
    ]
    if "error" in data:
        lines += [f"**The run failed:** {data['error']}", ""]
    lines += summary_lines(data)
    disturbed = [
        b
        for b in data.get("blocks", [])
        if ((b.get("machine") or {}).get("others_cores") or 0) > DISTURBED_CORES
    ]
    lines += [
        f"Medians over {settings['rounds']} rounds; in each round every contender runs its "
        f"blocks in turn, the order rotated by one each round: c=1 ({settings['c1_requests']} "
        f"timed requests after 10 untimed), then {settings['clients']} closed-loop clients for "
        f"{settings['duration_s']} s ({settings['client_procs']} client processes, one connection "
        "per client); bertdot's unary and stream blocks swap places every round. Before each "
        f"round the run waits up to {settings['quiet_wait_s']} s for other processes to use under "
        f"{DISTURBED_CORES} cores (others used {data.get('others_cores_before_rounds')} cores "
        f"as the rounds began). {len(disturbed)} of {len(data.get('blocks', []))} blocks ran "
        f"while others used more than {DISTURBED_CORES} cores (⚠).",
        "",
        "How to read it:",
        "",
        f"- bertdot does more per query than the peers: it encodes the query *and* searches an "
        f"HNSW index of {settings['passages']:,} passages for the top {settings['k']} (unary "
        "`Search`, no passage text), while the peers only return the query's vector.",
        "- Every contender runs the same fp32 ONNX graph (bertdot's export; bertdot at "
        f"`--precision {settings['bertdot_precision']}`) with ONNX Runtime's default threads, "
        "tokenises with the model's tokenizer padded to the batch's longest, and pools (mean) "
        "and normalises itself, so the gaps are serving: tokeniser, batching, transport.",
        "- fastembed runs in process: its c=1 is one `embed` call of one text, no RPC at all; its "
        f"{settings['clients']}-client figure is {settings['clients']} Python threads in that "
        "process, an analogue, not a server. Triton is reached through PyTriton (tritonserver "
        "→ Python backend stub → the ONNX Runtime session in PyTriton's process) over gRPC "
        "with its dynamic batcher (max batch 32, 500 µs queue delay); infinity-emb runs its "
        "optimum engine over HTTP/JSON (batch size 32).",
        "- The load client is one program, `benchmarks/peers/load.py`, for every server: the "
        "project's interpreter for bertdot and infinity, PyTriton's venv for Triton (it needs "
        "tritonclient). Vectors are checked on the contender's own encoding path, one query "
        "per request (bertdot: `Encode`), against sentence-transformers: floor "
        f"{settings['min_cosine']}.",
        "- Cores per block are measured over exactly the timed seconds by the process that "
        "times them: the server's process tree, the load client's, and everything else "
        '("others").',
    ]
    lines += ["", "## Contenders", ""]
    rows = []
    for name, info in data.get("contenders", {}).items():
        versions = ", ".join(f"{k} {v}" for k, v in info.get("versions", {}).items())
        rows.append([name, info.get("startup_s"), info.get("command", ""), versions])
    lines += [markdown_table(["contender", "ready after s", "started as", "versions"], rows)]
    if data.get("blocks"):
        lines += ["", "## Every block", "", blocks_table(data)]
    return "\n".join(lines) + "\n"
