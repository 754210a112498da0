"""The index thread: its jobs run one at a time, and another thread may do index work in
their place only while none runs, never beside one and never waiting."""

from __future__ import annotations

import threading
import time

from bertdot.server.engine.threads import IndexThread


def test_a_caller_runs_index_work_itself_only_while_the_thread_is_idle() -> None:
    with IndexThread() as index_thread:
        assert index_thread.run_if_idle(threading.current_thread) is threading.current_thread()
        release = threading.Event()
        job = index_thread.submit(release.wait, 10)
        time.sleep(0.05)  # the job is running
        started = time.perf_counter()
        assert index_thread.run_if_idle(lambda: "ran") is None  # busy: at once, not run
        assert time.perf_counter() - started < 0.05
        release.set()
        assert job.result(10)
        assert index_thread.run_if_idle(lambda: "ran") == "ran"


def test_jobs_wait_for_work_a_caller_runs_in_their_place() -> None:
    events: list[str] = []
    with IndexThread() as index_thread:

        def long_search() -> str:
            events.append("search starts")
            time.sleep(0.2)
            events.append("search ends")
            return "hits"

        caller = threading.Thread(target=lambda: index_thread.run_if_idle(long_search))
        caller.start()
        time.sleep(0.05)
        write = index_thread.submit(events.append, "write")  # submitted mid-search
        caller.join(10)
        write.result(10)
    assert events == ["search starts", "search ends", "write"]  # never in between
