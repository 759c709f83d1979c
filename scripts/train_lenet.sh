#!/usr/bin/env bash
# The quickstart: LeNet from the zoo on MNIST, trained with BVLC Caffe's recipe, printing the
# test accuracy.  MNIST comes from the shared folder's data/mnist (../shared beside the
# repository or $NETDEF_SHARED: tests/shared_paths.py) when it exists, else from the
# canonical mirrors; when neither is reachable (a machine that sees only the package
# registries), it falls back to Fashion-MNIST from the Debian package dataset-fashion-mnist
# and trains the same LeNet on it (model_zoo/lenet_fashion).  Run from the repository root
# with netdef on the PATH.  Extra arguments go to `netdef train` (e.g. --set max_iter=1000).
set -eo pipefail
FROM=""
SHARED=$(python3 "$(dirname "$0")/../tests/shared_paths.py" 2>/dev/null) || SHARED=""
[ -n "$SHARED" ] && [ -d "$SHARED/data/mnist" ] && FROM="--from $SHARED/data/mnist"
if netdef data get mnist $FROM --out examples/mnist; then
    SOLVER=model_zoo/lenet/lenet_solver.prototxt
else
    echo "train_lenet.sh: MNIST is not reachable here; falling back to Fashion-MNIST" \
         "(Debian package dataset-fashion-mnist) with model_zoo/lenet_fashion" >&2
    netdef data get fashion-mnist --out examples/fashion_mnist
    SOLVER=model_zoo/lenet_fashion/lenet_solver.prototxt
fi
netdef train --solver "$SOLVER" "$@" 2>&1 | grep --line-buffered -E "Solving|Testing net|Test net output|Optimization Done|error"
