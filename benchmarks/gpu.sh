#!/usr/bin/env bash
# The GPU benchmarks in one go, on a machine with an NVIDIA GPU, onnxruntime-gpu, and torch
# with CUDA (pip install "bertdot[server,export]"): the encoder (PyTorch eager fp16 vs
# ONNX Runtime's CUDA provider, fp16 file, IO binding, plain and with CUDA graphs), the server
# end to end on CUDA as BERTDOT_GPU_WORKERS (4) worker processes sharing the GPU (loaded by 4
# client processes) at concurrency 1, 32, 256, as one process at BERTDOT_GPU_CONCURRENCY
# (1,8,32,128,256), and as one process without CUDA graphs at concurrency 1; then one table
# with the targets. Extra arguments go to every server.py run. About 7 minutes on an H100.
#
#   bash benchmarks/gpu.sh [--passages 100000] [--duration 10]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${BERTDOT_RESULTS:-benchmarks/results}
python3 - <<'PY' || exit 1
import onnxruntime as ort

providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
if "CUDAExecutionProvider" not in providers:
    raise SystemExit("onnxruntime has no CUDA provider: install onnxruntime-gpu (not onnxruntime)")
PY
status=0
common=(--model seed --device cuda --duration 5 --warmup 1 --quiet-wait 5 --rounds 3
  --passages 20000 --out "$out")
python3 benchmarks/encoder_gpu.py --model seed --device cuda --out "$out" || status=1
# Several processes share the GPU: the throughput setup.
python3 benchmarks/server.py "${common[@]}" --concurrency 1,32,256 \
  --workers "${BERTDOT_GPU_WORKERS:-4}" --client-processes 4 "$@" || status=1
# One process, CUDA graphs on (the default): the latency setup.
python3 benchmarks/server.py "${common[@]}" \
  --concurrency "${BERTDOT_GPU_CONCURRENCY:-1,8,32,128,256}" "$@" || status=1
# One process without CUDA graphs, at concurrency 1: what the graphs take off a lone query.
python3 benchmarks/server.py "${common[@]}" --concurrency 1 --server-args=--no-cuda-graphs \
  "$@" || status=1
python3 benchmarks/gpu_table.py "$out"
exit $status
