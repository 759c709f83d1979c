#!/usr/bin/env python
"""Write the HDF5 data of model_zoo/lstm_sequence: the *echo* task over sequences of varying
length.

    python scripts/make_sequence_data.py [--out examples/lstm_sequence] [--streams 16]
                                         [--train-steps 6000] [--test-steps 600] [--seed 0]

N parallel streams (``--streams``) each run through a series of sequences of 1..6 steps.  At
every step the input is ``x = (value, first)`` — a value drawn from U(-0.5, 0.5) and 1 on a
sequence's first step, else 0 — and the target ``y`` is the first value of the current
sequence: the net must remember it until the sequence ends.  ``cont`` is 0 where a sequence
starts (Caffe's continuation indicator, which resets the LSTM state) and 1 elsewhere; every
stream starts a sequence at row 0, so reading the file again from the top is safe.

Each file holds three datasets whose rows are *time steps* — ``x`` (S, N, 2), ``cont``
(S, N), ``y`` (S, N, 1) — so an HDF5Data layer with ``batch_size: T`` hands the LSTM
T×N×... tops of T consecutive steps; the LSTM carries its state from one batch to the next
where ``cont`` is 1 (Caffe's LRCN layout).  Also written: train.txt and test.txt, the lists
that hdf5_data_param.source names.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

MAX_LEN = 6


def echo_streams(steps: int, streams: int, seed: int = 0, max_len: int = MAX_LEN):
    """``(x, cont, y)`` float32 arrays of shapes (steps, streams, 2), (steps, streams),
    (steps, streams, 1) for the echo task (see the module docstring)."""
    rng = np.random.default_rng(seed)
    x = np.zeros((steps, streams, 2), np.float32)
    cont = np.ones((steps, streams), np.float32)
    y = np.zeros((steps, streams, 1), np.float32)
    for n in range(streams):
        t = 0
        while t < steps:
            length = int(rng.integers(1, max_len + 1))
            v = rng.uniform(-0.5, 0.5, size=length).astype(np.float32)
            cont[t, n] = 0
            k = min(length, steps - t)
            x[t:t + k, n, 0] = v[:k]
            x[t, n, 1] = 1
            y[t:t + k, n, 0] = v[0]
            t += length
    return x, cont, y


def write_split(folder: str, name: str, steps: int, streams: int, seed: int) -> str:
    import h5py

    x, cont, y = echo_streams(steps, streams, seed)
    path = os.path.join(folder, f"{name}.h5")
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f["x"], f["cont"], f["y"] = x, cont, y
    os.replace(tmp, path)
    with open(os.path.join(folder, f"{name}.txt"), "w") as f:
        f.write(f"{name}.h5\n")          # relative to the list's folder
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="examples/lstm_sequence")
    ap.add_argument("--streams", type=int, default=16)
    ap.add_argument("--train-steps", type=int, default=6000)
    ap.add_argument("--test-steps", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    try:
        import h5py  # noqa: F401
    except ImportError:
        print("error: needs h5py: pip install 'netdef[hdf5]'", file=sys.stderr)
        return 2
    os.makedirs(a.out, exist_ok=True)
    for name, steps, seed in (("train", a.train_steps, a.seed), ("test", a.test_steps,
                                                                 a.seed + 1)):
        path = write_split(a.out, name, steps, a.streams, seed)
        print(f"wrote {path} ({steps} steps x {a.streams} streams) and "
              f"{os.path.join(a.out, name + '.txt')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
