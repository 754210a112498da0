"""fastembed, in process: the model loads once and answers commands, one JSON line each way,
so that its blocks can alternate with the servers' without reloading. Run with the fastembed
venv's interpreter:

    worker_fastembed.py --model-dir DIR --queries FILE
    -> {"ready": true, "load_s": ...}
    <- {"cmd": "c1", "n": 100}                       -> {"c1": {...}, "machine": {...}}
    <- {"cmd": "concurrent", "clients": 16, "duration": 5}  -> {"qps": ..., "machine": {...}}
    <- {"cmd": "vectors", "out": "v.npy"}            -> {"vectors": 200, "dim": 384}
    <- {"cmd": "quit"}

A query is one text per `embed` call: tokenise, one ONNX Runtime run of batch 1, mean pooling,
L2 normalisation, which is what a query costs in process. "concurrent" runs that many Python
threads each embedding single texts (ONNX Runtime releases the GIL while it runs): an
in-process analogue of concurrent clients, not a server, reported apart from the servers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType
from load import latency_summary  # the servers' latencies are summarised alike
from machine import Meter, Window

# fastembed registers "sentence-transformers/all-MiniLM-L6-v2" already (Qdrant's ONNX, fetched
# from the hub) and refuses to register a name twice, hence a name of our own.
NAME = "local/all-MiniLM-L6-v2"


def load_model(model_dir: Path) -> TextEmbedding:
    TextEmbedding.add_custom_model(
        model=NAME,
        pooling=PoolingType.MEAN,
        normalization=True,
        sources=ModelSource(hf=NAME),  # never fetched: specific_model_path wins
        dim=384,
        model_file="onnx/model.onnx",  # relative to specific_model_path
    )
    # threads=None: ONNX Runtime's default thread count, as every other contender has.
    return TextEmbedding(NAME, specific_model_path=str(model_dir), threads=None)


class Worker:
    def __init__(self, model_dir: Path, queries: list[str]) -> None:
        started = time.perf_counter()
        self.model = load_model(model_dir)
        self.queries = queries
        for text in queries[:20]:  # warm-up, untimed
            self.one(text)
        self.load_s = round(time.perf_counter() - started, 2)

    def one(self, text: str) -> np.ndarray:
        # embed() is a generator over batches: the work happens in next(), not in the call.
        return next(iter(self.model.embed([text], batch_size=1)))

    def c1(self, n: int) -> dict[str, Any]:
        for text in self.queries[:10]:
            self.one(text)
        meter = Meter(None)
        latencies = []
        meter.start()
        for i in range(n):
            started = time.perf_counter()
            self.one(self.queries[i % len(self.queries)])
            latencies.append(time.perf_counter() - started)
        return {"c1": latency_summary(latencies), "machine": meter.stop()}

    def vectors(self, out: Path) -> dict[str, Any]:
        rows = np.asarray([self.one(text) for text in self.queries], dtype=np.float32)
        np.save(out, rows)
        return {"vectors": len(rows), "dim": int(rows.shape[1])}

    def concurrent(self, clients: int, duration: float) -> dict[str, Any]:
        start_at = time.perf_counter() + 0.2  # every thread started before the clock
        stop_at = start_at + duration
        done = [0] * clients

        def loop(i: int) -> None:
            k = i
            time.sleep(max(0.0, start_at - time.perf_counter()))
            while time.perf_counter() < stop_at:
                self.one(self.queries[k % len(self.queries)])
                if time.perf_counter() <= stop_at:
                    done[i] += 1
                k += clients

        window = Window(start_at, stop_at, None, os.getpid())
        threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return {
            "clients": clients,
            "seconds": duration,
            "completed": sum(done),
            "qps": round(sum(done) / duration, 1),
            "machine": window.join(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    args = parser.parse_args()
    queries = [line for line in args.queries.read_text(encoding="utf-8").splitlines() if line]
    worker = Worker(args.model_dir, queries)

    def say(answer: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()

    say({"ready": True, "load_s": worker.load_s})
    for line in sys.stdin:
        if not line.strip():
            continue
        command = json.loads(line)
        name = command.get("cmd")
        try:
            if name == "c1":
                say(worker.c1(int(command["n"])))
            elif name == "concurrent":
                say(worker.concurrent(int(command["clients"]), float(command["duration"])))
            elif name == "vectors":
                say(worker.vectors(Path(command["out"])))
            elif name == "quit":
                return
            else:
                say({"error": f"unknown command {name!r}"})
        except Exception as exc:  # the driver reports it; the model stays loaded
            say({"error": f"{type(exc).__name__}: {exc}"})


if __name__ == "__main__":
    main()
