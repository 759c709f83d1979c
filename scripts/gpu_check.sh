#!/usr/bin/env bash
# The one-shot GPU check (scripts/gpu_check.py): from the repository root of a clean checkout
# on a machine with an NVIDIA GPU and no network, after `python scripts/gpu_check.py --prepare`
# here has put MNIST into gpu_data/ (an ignored folder that travels with the run):
#     bash scripts/gpu_check.sh            # results in $OUT (or gpu_results/): summary.json
# Under NUMBA_ENABLE_CUDASIM=1 the same steps run as a dry run at the smallest sizes.
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_ENABLE_CUDASIM=${NUMBA_ENABLE_CUDASIM:-0}
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
