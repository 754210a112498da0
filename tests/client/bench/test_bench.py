"""`bertdot bench` against the fake server: every mode, its JSON, errors, pacing and plots."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from bertdot.cli.main import main
from bertdot.client.bench import report as bench_report
from bertdot.client.bench.runner import BenchConfig, run_bench
from bertdot.client.bench.stats import Snapshot
from bertdot.v1 import bertdot_pb2 as pb
from tests.support import fake_server
from tests.support.fake_server import FakeRetrieval

KEYS = {"requests", "errors", "throughput_qps", "latency_ms", "server_ms", "dropped"}


class ScriptedFake(FakeRetrieval):
    """The fake, plus: refuse every ``refuse_every``-th query with RESOURCE_EXHAUSTED (a status
    for Search, the item's ``error`` in SearchStream), and remember the queries seen."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse_every = 0
        self.seen: Counter[str] = Counter()
        self.peers: Counter[str] = Counter()  # requests by client address and port
        self.count = 0

    def _refuse(self, query: str, context: grpc.ServicerContext) -> bool:
        with self.lock:
            self.peers[context.peer()] += 1
            self.seen[query] += 1
            self.count += 1
            return bool(self.refuse_every) and self.count % self.refuse_every == 0

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> Any:
        if self._refuse(request.query, context):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "queue full")
        return super().Search(request, context)

    def SearchStream(self, request_iterator: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        self._enter("SearchStream", context)
        for request in request_iterator:
            if self._refuse(request.query, context):
                yield pb.SearchResponse(id=request.id, error=pb.Error(code=8, message="full"))
            else:
                yield self._answer(request)


@pytest.fixture
def fake() -> Iterator[tuple[str, ScriptedFake]]:
    server, port, servicer = fake_server.start(ScriptedFake())
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def bench(target: str, tmp_path: Path, *flags: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    argv = ["bench", "--target", target, "--duration", "1.2", "--warmup", "0.2", "--json", str(out)]
    main([*argv, *flags])
    return json.loads(out.read_text())


def assert_sane(report: dict[str, Any]) -> None:
    assert report.keys() >= KEYS
    assert report["requests"] > 0
    lat = report["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]
    assert report["throughput_qps"] == pytest.approx(
        report["requests"] / report["duration_s"], rel=0.01
    )
    assert 1.2 <= report["duration_s"] < 2.0
    # The server's own timings come from the responses: the fake says encode 7 µs, total 9 µs.
    server = report["server_ms"]
    assert {"queue", "encode", "search", "total"} <= server.keys()
    assert server["encode"]["p50"] == server["encode"]["p99"] == 0.007
    assert server["total"]["p50"] == 0.009


MODES = {
    "closed-unary": ("--concurrency", "4"),
    "closed-stream": ("--concurrency", "4", "--mode", "stream"),
    "open-constant": ("--rate", "300"),
    "open-poisson": ("--rate", "300", "--arrivals", "poisson", "--seed", "7", "--mode", "stream"),
}


@pytest.mark.parametrize("flags", MODES.values(), ids=MODES.keys())
def test_each_mode_reports_sane_json(
    fake: tuple[str, ScriptedFake], tmp_path: Path, flags: tuple[str, ...]
) -> None:
    target, servicer = fake
    report = bench(target, tmp_path, *flags, "--token", "s3cret")
    assert_sane(report)
    assert report["errors"] == {} and report["dropped"] == 0
    # Warm-up answers were sent but are not counted.
    assert servicer.count > report["requests"]
    stream = "stream" in flags
    assert report["mode"] == ("stream" if stream else "unary")
    assert (servicer.calls["SearchStream"] > 0) == stream
    assert (servicer.calls["Search"] > 0) != stream
    method = "SearchStream" if stream else "Search"
    assert servicer.metadata[method]["authorization"] == "Bearer s3cret"
    assert len(servicer.peers) == 1  # one connection unless --connections says more
    if "--rate" in flags:  # the open loop holds its rate whatever the answers do
        assert report["loop"] == "open"
        assert report["throughput_qps"] == pytest.approx(300, rel=0.15)
        assert report["send_lag_ms"]["p50"] < 5
    else:
        assert report["loop"] == "closed" and report["concurrency"] == 4


@pytest.mark.parametrize("mode", ["unary", "stream"])
def test_connections_spread_the_load_evenly(
    fake: tuple[str, ScriptedFake], tmp_path: Path, mode: str
) -> None:
    target, servicer = fake
    report = bench(target, tmp_path, "--concurrency", "6", "--connections", "3", "--mode", mode)
    assert_sane(report)
    assert report["connections"] == 3 and report["errors"] == {}
    counts = sorted(servicer.peers.values())  # one peer (client port) per connection
    assert len(counts) == 3 and counts[0] > 0.5 * counts[-1]


@pytest.mark.parametrize("flags", [("--concurrency", "4"), ("--rate", "300", "--mode", "stream")])
def test_processes_share_the_load_and_merge_their_recordings(
    fake: tuple[str, ScriptedFake], tmp_path: Path, flags: tuple[str, ...]
) -> None:
    target, servicer = fake
    servicer.refuse_every = 5
    report = bench(target, tmp_path, *flags, "--processes", "2")
    assert report["processes"] == 2 and report["connections"] == 2
    assert len(servicer.peers) == 2  # one connection from each process
    # The merged counts are the sum of both processes' answers, refusals included.
    refused = report["errors"]["RESOURCE_EXHAUSTED"]
    assert refused == pytest.approx(report["requests"] / 5, rel=0.15)
    assert report["ok"] + refused == report["requests"] < servicer.count
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert report["server_ms"]["encode"]["p50"] == 0.007
    if "--rate" in flags:  # each process sends half the rate: together the whole
        assert report["throughput_qps"] == pytest.approx(300, rel=0.15)


def test_split_shares_concurrency_connections_and_rate() -> None:
    from bertdot.client.bench.runner import BenchConfig, split

    parts = split(BenchConfig(concurrency=7, connections=5, processes=3, seed=1))
    assert [p.concurrency for p in parts] == [3, 2, 2]
    assert [p.connections for p in parts] == [2, 2, 1]
    assert [p.seed for p in parts] == [1, 2, 3] and all(p.processes == 1 for p in parts)
    open_parts = split(BenchConfig(rate=900.0, connections=3, processes=3))
    assert [p.rate for p in open_parts] == [300.0] * 3
    with pytest.raises(ValueError, match="concurrency 2 is below processes 3"):
        split(BenchConfig(concurrency=2, connections=3, processes=3))


@pytest.mark.parametrize("mode", ["unary", "stream"])
def test_refusals_counted_by_status_code(
    fake: tuple[str, ScriptedFake], tmp_path: Path, mode: str
) -> None:
    target, servicer = fake
    servicer.refuse_every = 4
    report = bench(target, tmp_path, "--concurrency", "2", "--mode", mode)
    refused = report["errors"]["RESOURCE_EXHAUSTED"]
    assert set(report["errors"]) == {"RESOURCE_EXHAUSTED"}
    assert refused == pytest.approx(report["requests"] / 4, rel=0.1)
    assert report["ok"] == report["requests"] - refused
    assert report["goodput_qps"] < report["throughput_qps"]


def test_queries_file_is_sent(fake: tuple[str, ScriptedFake], tmp_path: Path) -> None:
    target, servicer = fake
    queries = tmp_path / "q.txt"
    queries.write_text("alpha beta\n\n  gamma  \n", encoding="utf-8")
    bench(target, tmp_path, "--queries", str(queries), "--rate", "100")
    assert set(servicer.seen) == {"alpha beta", "gamma"}
    assert abs(servicer.seen["gamma"] - servicer.seen["alpha beta"]) <= 1  # round-robin


def test_open_loop_latency_counts_from_the_intended_send_time(
    fake: tuple[str, ScriptedFake],
) -> None:
    """Stall the generator's own loop for 300 ms: sends due meanwhile leave late, and their
    latency must include the wait (as a queued user would see it), not hide it."""
    target, _ = fake
    config = BenchConfig(target=target, rate=200, duration_s=1.0, warmup_s=0.1)
    stalled = threading.Event()

    def stall_once(snapshot: Snapshot) -> None:
        if not snapshot.warming_up and not stalled.is_set():
            stalled.set()
            time.sleep(0.3)  # blocks the event loop, as a slow generator would

    result = asyncio.run(run_bench(config, stall_once, progress_every_s=0.3))
    report = bench_report.summary(result)
    assert stalled.is_set()
    assert report["send_lag_ms"]["max"] >= 250
    assert report["latency_ms"]["max"] >= 250  # answered in µs, yet waited for the stall
    assert report["latency_ms"]["p50"] < 50
    assert report["requests"] == pytest.approx(200, rel=0.05)  # late sends still all sent


def test_open_loop_drops_beyond_max_in_flight(
    fake: tuple[str, ScriptedFake], tmp_path: Path
) -> None:
    target, servicer = fake
    servicer.slow_s = 0.5
    slow = tmp_path / "slow.txt"
    slow.write_text("slow\n", encoding="utf-8")
    report = bench(
        target, tmp_path, "--queries", str(slow), "--rate", "100", "--max-in-flight", "5"
    )
    assert report["dropped"] > 50  # ~120 due, at most ~5 in flight every 0.5 s
    assert report["requests"] + report["dropped"] == pytest.approx(120, abs=3)
    assert report["latency_ms"]["p50"] >= 500


def test_plot_png_and_summary_table(
    fake: tuple[str, ScriptedFake], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target, servicer = fake
    servicer.refuse_every = 10
    png = tmp_path / "lat.png"
    bench(target, tmp_path, "--rate", "200", "--plot", str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    out, err = capsys.readouterr()
    assert "open loop, 200 q/s constant" in out and "client latency" in out
    assert "RESOURCE_EXHAUSTED" in out and "server encode" in out
    assert "\r" not in err  # stdout is not a terminal: no progress line


def test_plot_without_matplotlib_fails_before_running(
    fake: tuple[str, ScriptedFake], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target, servicer = fake
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name)
    )
    with pytest.raises(SystemExit) as exited:
        bench(target, tmp_path, "--plot", str(tmp_path / "x.png"))
    assert "needs the plot extra: pip install 'bertdot[plot]'" in str(exited.value.code)
    assert servicer.count == 0


def test_rate_and_concurrency_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["bench", "--rate", "10", "--concurrency", "2"])
    assert exited.value.code == 2
    assert "exclude each other" in capsys.readouterr().err


def test_unreachable_server_counts_unavailable(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    argv = ["bench", "--target", "127.0.0.1:1", "--duration", "0.3", "--warmup", "0"]
    argv += ["--timeout", "0.5"]  # also the longest wait for the connection
    assert main([*argv, "--json", str(out)]) == 1  # nothing succeeded
    report = json.loads(out.read_text())
    assert set(report["errors"]) == {"UNAVAILABLE"} and report["ok"] == 0
    assert report["latency_ms"]["p50"] is None


def test_progress_line_rewrites_one_line() -> None:
    out = io.StringIO()
    line = bench_report.ProgressLine(out, columns=120)
    line(Snapshot(1.0, True, 10, 0, 0, 10.0, None, None))
    line(Snapshot(2.0, False, 2500, 3, 1, 2490.0, 1.25, 4.5))
    line.close()
    parts = out.getvalue().split("\r")
    assert "\n" not in out.getvalue() and len(parts) == 5 and parts[0] == parts[4] == ""
    assert "warm-up" in parts[1] and "10 req" in parts[1]
    assert "measuring" in parts[2] and "2,500 req" in parts[2] and "p99 4.500 ms" in parts[2]
    assert parts[3].strip() == ""  # close() blanks the line for the summary
    narrow = io.StringIO()
    bench_report.ProgressLine(narrow, columns=40)(Snapshot(2.0, False, 2500, 3, 1, 9.0, 1.0, 4.5))
    assert len(narrow.getvalue()) == 40  # "\r" + 39 columns: never wraps
