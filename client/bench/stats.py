"""What `bertdot bench` records: one call per finished request, cheap enough for the hot path.

Latencies go into HDR histograms (microseconds, 3 significant digits): recording is a
sub-microsecond C call and percentiles stay exact to 0.1% however long the run. Requests
whose *intended* send time falls in the warm-up are ignored, so a cold server's first
seconds never reach the report. Failed requests are counted by status code and kept out of
the latency histogram: a fast refusal is not a fast answer.
"""

from __future__ import annotations

from array import array
from collections import Counter
from dataclasses import dataclass
from typing import Any

from hdrh.histogram import HdrHistogram

MAX_US = 60_000_000  # one minute; longer latencies are recorded as one minute
STAGES = ("queue", "tokenize", "encode", "search", "total")


def _histogram() -> HdrHistogram:
    return HdrHistogram(1, MAX_US, 3)


@dataclass(frozen=True)
class Snapshot:
    """The state shown by the live progress line."""

    elapsed_s: float
    warming_up: bool
    requests: int
    errors: int
    dropped: int
    qps: float
    p50_ms: float | None
    p99_ms: float | None


class Stats:
    """Recorder of one run; times are ``time.perf_counter()`` seconds.

    ``window_start`` is the end of the warm-up: only requests intended at or after it count.
    """

    def __init__(self, start: float, window_start: float) -> None:
        self.start = start
        self.window_start = window_start
        self.latency = _histogram()
        self.send_lag = _histogram()  # actual − intended send time: is the generator keeping up?
        self.server = {stage: _histogram() for stage in STAGES}
        self.batch_sum = 0
        self.batch_count = 0
        self.errors: Counter[str] = Counter()
        self.dropped = 0
        self.ok_count = 0
        self.last_done = window_start
        # Timeline for the plot: completion time (s since window start) and latency (ms).
        self.done_s = array("d")
        self.latency_ms = array("d")
        self.error_s = array("d")
        self._tick_requests = 0
        self._tick_time = start

    @property
    def requests(self) -> int:
        """Finished requests of the measurement window, failed ones included (drops excluded)."""
        return self.ok_count + sum(self.errors.values())

    def ok(self, intended: float, sent: float, done: float, timings: Any) -> None:
        """A successful answer; ``timings`` is the response's ``bertdot.v1.Timings``."""
        if intended < self.window_start:
            return
        latency_us = int((done - intended) * 1e6)
        self.latency.record_value(min(max(latency_us, 1), MAX_US))
        self.send_lag.record_value(min(max(int((sent - intended) * 1e6), 1), MAX_US))
        server = self.server
        server["queue"].record_value(min(timings.queue_us, MAX_US))
        server["tokenize"].record_value(min(timings.tokenize_us, MAX_US))
        server["encode"].record_value(min(timings.encode_us, MAX_US))
        server["search"].record_value(min(timings.search_us, MAX_US))
        server["total"].record_value(min(timings.total_us, MAX_US))
        if timings.batch_size:
            self.batch_sum += timings.batch_size
            self.batch_count += 1
        self.ok_count += 1
        self.last_done = max(self.last_done, done)
        self.done_s.append(done - self.window_start)
        self.latency_ms.append(latency_us / 1000)

    def error(self, intended: float, done: float, code: str) -> None:
        """A failed request (a gRPC status, or the ``error`` of one stream item)."""
        if intended < self.window_start:
            return
        self.errors[code] += 1
        self.last_done = max(self.last_done, done)
        self.error_s.append(done - self.window_start)

    def drop(self, intended: float) -> None:
        """An open-loop send skipped because ``max_in_flight`` requests were unanswered."""
        if intended >= self.window_start:
            self.dropped += 1

    def measured_s(self, configured_s: float) -> float:
        """The window's real length: the configured one, or longer when counted answers
        arrived after it (sends stop at its end; the answers still due are awaited)."""
        return max(configured_s, self.last_done - self.window_start)

    def snapshot(self, now: float) -> Snapshot:
        """Progress since the start; ``qps`` is over the interval since the last snapshot."""
        requests = self.requests
        dt = now - self._tick_time
        qps = (requests - self._tick_requests) / dt if dt > 0 else 0.0
        self._tick_requests, self._tick_time = requests, now
        has = self.latency.get_total_count() > 0
        return Snapshot(
            elapsed_s=now - self.start,
            warming_up=now < self.window_start,
            requests=requests,
            errors=sum(self.errors.values()),
            dropped=self.dropped,
            qps=qps,
            p50_ms=self.latency.get_value_at_percentile(50) / 1000 if has else None,
            p99_ms=self.latency.get_value_at_percentile(99) / 1000 if has else None,
        )


def to_state(stats: Stats, configured_s: float) -> dict[str, Any]:
    """Everything a merge needs, as plain picklable values (histograms HDR-encoded): how a
    load-generating process hands its recording to the parent of `bench --processes`."""
    return {
        "start": stats.start,
        "window_start": stats.window_start,
        "measured_s": stats.measured_s(configured_s),
        "latency": stats.latency.encode(),
        "send_lag": stats.send_lag.encode(),
        "server": {stage: h.encode() for stage, h in stats.server.items()},
        "batch_sum": stats.batch_sum,
        "batch_count": stats.batch_count,
        "errors": dict(stats.errors),
        "dropped": stats.dropped,
        "ok_count": stats.ok_count,
        "done_s": stats.done_s.tobytes(),
        "latency_ms": stats.latency_ms.tobytes(),
        "error_s": stats.error_s.tobytes(),
    }


def merged(states: list[dict[str, Any]]) -> tuple[Stats, float]:
    """One recording from several processes' (`to_state`), and the longest measured window.
    Their clocks agree (`perf_counter` is the system-wide monotonic clock on Linux) and they
    started their windows together, so the timelines share one origin closely enough."""
    stats = Stats(min(s["start"] for s in states), min(s["window_start"] for s in states))
    for state in states:
        stats.latency.add(HdrHistogram.decode(state["latency"]))
        stats.send_lag.add(HdrHistogram.decode(state["send_lag"]))
        for stage, encoded in state["server"].items():
            stats.server[stage].add(HdrHistogram.decode(encoded))
        stats.batch_sum += state["batch_sum"]
        stats.batch_count += state["batch_count"]
        stats.errors.update(state["errors"])
        stats.dropped += state["dropped"]
        stats.ok_count += state["ok_count"]
        for name in ("done_s", "latency_ms", "error_s"):
            getattr(stats, name).frombytes(state[name])
    return stats, max(s["measured_s"] for s in states)
