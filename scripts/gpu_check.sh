#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (no installs: the machine's own numba-cuda/numpy/torch), from
# the repository root:  bash scripts/gpu_check.sh
# 1) the CUDA test suite for real (NUMBA_ENABLE_CUDASIM=0), 2) the GPU benchmark (LeNet,
# CIFAR-10 quick, SqueezeNet 224x224; ratios to PyTorch fp32 with TF32 off; SGEMM TFLOP/s).
# Everything is bounded to finish within 8 minutes.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_ENABLE_CUDASIM=0
PY=${PYTHON:-python3}
status=0
echo "== device"
timeout 60 $PY -m netdef_cli.main device-query || status=1
echo "== CUDA tests (real GPU)"
timeout 240 $PY -m pytest -q -m gpu -p no:cacheprovider tests/test_cuda_gemm.py \
    tests/test_cuda_layers.py tests/test_cuda_train.py tests/test_cuda_api.py \
    tests/test_cuda_staging.py tests/test_cuda_cli.py || status=1
echo "== benchmark"
timeout 200 $PY scripts/bench_gpu.py --gpu 0 --vs-torch --iters 10 --warmup 2 --json || status=1
exit $status
