#!/bin/sh
# BVLC Caffe's examples/cifar10/train_quick.sh for netdef; run from the repository root
# after `netdef data get cifar10`.
set -e
netdef train --solver model_zoo/cifar10_quick/cifar10_quick_solver.prototxt "$@"
netdef train --solver model_zoo/cifar10_quick/cifar10_quick_solver_lr1.prototxt \
    --snapshot examples/cifar10/cifar10_quick_iter_4000.solverstate "$@"
