#!/usr/bin/env bash
# The GPU benchmarks in one go, on a machine with an NVIDIA GPU, onnxruntime-gpu, and torch
# with CUDA (pip install "bertdot[server,export]"): the encoder (PyTorch eager fp16 vs
# ONNX Runtime's CUDA provider, fp16 file, IO binding), the server end to end on CUDA at
# concurrency 1…256, as one process and as BERTDOT_GPU_WORKERS (4) worker processes sharing
# the GPU (loaded by 4 client processes), then one table with the targets. Extra arguments go to both server.py runs.
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
python3 benchmarks/encoder_gpu.py --model seed --device cuda --out "$out" || status=1
python3 benchmarks/server.py --model seed --device cuda --concurrency 1,8,32,128,256 \
  --duration 5 --warmup 1 --quiet-wait 5 --passages 20000 --out "$out" "$@" || status=1
python3 benchmarks/server.py --model seed --device cuda --concurrency 1,32,256 \
  --workers "${BERTDOT_GPU_WORKERS:-4}" --client-processes 4 --rounds 3 \
  --duration 5 --warmup 1 --quiet-wait 5 --passages 20000 --out "$out" "$@" || status=1
python3 benchmarks/gpu_table.py "$out"
exit $status
