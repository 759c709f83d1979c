"""Time ``Solver.apply_update`` on AlexNet-sized parameters (61M float32, Caffe's bvlc_alexnet
shapes, lr_mult 1/2 and decay_mult 1/0 for weights/biases, weight_decay 5e-4 L2): the separate
numpy passes (``FUSED = False``, as ``NETDEF_NO_FUSED_UPDATE=1``) against the fused one-pass
kernels, for SGD with momentum and Adam.  Usage: ``python scripts/bench_update.py [reps]``
(Numba threads: NUMBA_NUM_THREADS, default all cores)."""
import sys
import time
from types import SimpleNamespace

import numba
import numpy as np

from netdef.proto import pb
from netdef.solvers import updates as U
from netdef.solvers.solver import Solver

ALEXNET = [(96, 3, 11, 11), (96,), (256, 48, 5, 5), (256,), (384, 256, 3, 3), (384,),
           (384, 192, 3, 3), (384,), (256, 192, 3, 3), (256,), (4096, 9216), (4096,),
           (4096, 4096), (4096,), (1000, 4096), (1000,)]


def fake_solver(kind, dtype=np.float32):
    p = pb.SolverParameter()
    p.type, p.momentum, p.weight_decay, p.base_lr = kind, 0.9, 5e-4, 0.01
    rng = np.random.default_rng(0)
    params = []
    for shape in ALEXNET:
        blob = SimpleNamespace(data=(rng.standard_normal(shape, np.float32) * 0.01).astype(dtype),
                               diff=np.zeros(shape, dtype))
        bias = len(shape) == 1
        params.append(SimpleNamespace(blob=blob, lr_mult=2.0 if bias else 1.0,
                                      decay_mult=0.0 if bias else 1.0))
    rule = U.get_update_rule(kind)(p)
    grads = [(rng.standard_normal(s, np.float32) * 1e-3).astype(dtype) for s in ALEXNET]
    return SimpleNamespace(param=p, device=None, params=params, rule=rule, iter=0,
                           history=rule.init_history([q.blob.data for q in params])), grads


def bench(kind, fused, reps):
    U.FUSED = fused
    s, grads = fake_solver(kind)
    times = []
    for r in range(reps + 1):                         # the first: compile / first touch
        for q, g in zip(s.params, grads):
            np.copyto(q.blob.diff, g)
        t0 = time.perf_counter()
        Solver.apply_update(s, rate=0.01)
        times.append(time.perf_counter() - t0)
        s.iter += 1
    return min(times[1:]), float(np.median(times[1:]))


def main():
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    n = sum(int(np.prod(s)) for s in ALEXNET)
    print(f"{n / 1e6:.2f}M float32 params, numba threads {numba.get_num_threads()}, "
          f"best / median of {reps}")
    for kind in ("SGD", "Adam"):
        res = {f: bench(kind, f, reps) for f in (False, True)}
        (a, am), (b, bm) = res[False], res[True]
        print(f"{kind:5s} separate passes {a * 1e3:7.1f} ms ({am * 1e3:.1f})   "
              f"fused {b * 1e3:7.1f} ms ({bm * 1e3:.1f})   x{a / b:.2f}")


if __name__ == "__main__":
    main()
