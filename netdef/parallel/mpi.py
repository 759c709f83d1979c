"""Data-parallel training over MPI (mpi4py; ``pip install 'netdef[mpi]'``).

Caffe's multi-GPU semantics, one process per rank:

* ``batch_size`` is per rank; in iteration *i* rank *r* reads items
  ``[(i·R + r)·B, (i·R + r + 1)·B)`` of the training source (R ranks, batch B), so R ranks of
  batch B see exactly the batches of one process with batch R·B;
* the random seed is ``random_seed + rank`` (as Caffe's ``Solver::Init``) and rank 0's
  initial weights are broadcast, so all ranks start equal;
* gradients are summed with ``Iallreduce`` in buckets, each started as soon as the backward
  pass has finished with every layer that contributes to it (so communication overlaps the
  rest of the backward pass), then averaged — every rank applies the same update;
* rank 0 alone logs, tests and writes snapshots; a snapshot carries every rank's RNG and
  data-reader state, so a resume restores all ranks;
* stop/snapshot requests (SIGINT, SIGHUP) are agreed between ranks each iteration, so all
  ranks stop at the same iteration; an exception on one rank aborts the whole job at once
  with a message naming the rank.

Nothing here imports mpi4py unless the process was started by an MPI launcher.
"""
from __future__ import annotations

import os
import sys

import numpy as np

from ..errors import ConfigError

_ENV_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")
_ENV_LOCAL_RANK = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK",
                   "PMI_LOCAL_RANK")

_context = None


class Context:
    """The rank layout of this process (a single process is rank 0 of 1)."""

    def __init__(self, comm=None):
        self.comm = comm
        self.rank = comm.Get_rank() if comm is not None else 0
        self.size = comm.Get_size() if comm is not None else 1
        self.local_rank = next((int(os.environ[k]) for k in _ENV_LOCAL_RANK if k in os.environ),
                               self.rank)

    @property
    def active(self) -> bool:
        return self.size > 1

    def abort(self, code: int = 2) -> None:
        if self.comm is not None:
            sys.stderr.flush()
            self.comm.Abort(code)


def launched_by_mpi() -> bool:
    return any(int(os.environ.get(k, "1") or 1) > 1 for k in _ENV_SIZE)


def init() -> Context:
    """The process's Context: MPI's COMM_WORLD when started by mpiexec with more than one
    rank, otherwise a single-process context."""
    global _context
    if _context is not None:
        return _context
    if not launched_by_mpi():
        _context = Context()
        return _context
    try:
        from mpi4py import MPI
    except ImportError:
        raise ConfigError("this process was started by an MPI launcher but mpi4py is not "
                          "installed: pip install 'netdef[mpi]'") from None
    _context = Context(MPI.COMM_WORLD)
    return _context


def context() -> Context:
    """The current Context (single-process unless :func:`init` found MPI)."""
    return _context if _context is not None else Context()


def shard(batch_size: int) -> tuple[int, int]:
    """Items to skip before and after this rank's part of each global training batch."""
    ctx = context()
    return ctx.rank * batch_size, (ctx.size - 1 - ctx.rank) * batch_size


class GradientSync:
    """Bucketed, overlapped gradient averaging for a Solver's train net."""

    def __init__(self, solver, ctx: Context, bucket_bytes: int = 1 << 20):
        from mpi4py import MPI
        self.MPI = MPI
        self.ctx = ctx
        self.solver = solver
        net = solver.net
        self.params = solver.params
        # the layer whose backward completes each param's gradient: the lowest index using it
        done_at = {}
        for i, owners in enumerate(net.layer_param_owner):
            for k in owners:
                if k is not None and k >= 0:
                    done_at[k] = min(done_at.get(k, i), i)
        self.ready_after: dict[int, list[int]] = {}
        for k in range(len(self.params)):
            self.ready_after.setdefault(done_at.get(k, 0), []).append(k)
        self.bucket_bytes = bucket_bytes
        # which process is which rank, for the launcher's messages about a failed PID
        import logging
        import socket
        who = ctx.comm.gather((ctx.rank, os.getpid(), socket.gethostname()), root=0)
        if ctx.rank == 0:
            logging.getLogger("netdef.mpi").info(
                f"data-parallel over {ctx.size} MPI ranks: " +
                ", ".join(f"rank {r} = pid {pid} on {host}" for r, pid, host in who))
        self.pending: list = []
        self.current: list[int] = []
        self.current_bytes = 0
        self.armed = False
        self.seconds = 0.0           # time spent inside MPI calls (for bench_mpi.py)

    # -- one iteration's backward -----------------------------------------------------------
    def arm(self) -> None:
        """The next backward pass is the last before the update: sync during it."""
        self.armed = True
        self.pending.clear()
        self.current, self.current_bytes = [], 0
        self.solver.net.on_layer_backward = self._layer_done

    def _layer_done(self, i: int) -> None:
        for k in self.ready_after.get(i, ()):
            self.current.append(k)
            self.current_bytes += self.params[k].blob.diff.nbytes
        if self.current_bytes >= self.bucket_bytes:
            self._launch()
        elif self.pending:
            self._progress()

    def _launch(self) -> None:
        if not self.current:
            return
        import time
        t = time.perf_counter()
        diffs = [self.params[k].blob.diff for k in self.current]
        send = np.concatenate([d.reshape(-1) for d in diffs])
        recv = np.empty_like(send)
        req = self.ctx.comm.Iallreduce(send, recv, op=self.MPI.SUM)
        self.pending.append((req, send, recv, list(self.current)))
        self.current, self.current_bytes = [], 0
        self.seconds += time.perf_counter() - t

    def _progress(self) -> None:
        self.MPI.Request.Testall([p[0] for p in self.pending])

    def finish(self) -> None:
        """Complete every bucket (any params not yet sent go now) and average."""
        import time
        self.solver.net.on_layer_backward = None
        self.armed = False
        missing = [k for k in range(len(self.params))
                   if not any(k in p[3] for p in self.pending) and k not in self.current]
        self.current += missing
        self._launch()
        t = time.perf_counter()
        self.MPI.Request.Waitall([p[0] for p in self.pending])
        self.seconds += time.perf_counter() - t
        scale = 1.0 / self.ctx.size
        for _req, _send, recv, ks in self.pending:
            off = 0
            for k in ks:
                d = self.params[k].blob.diff
                n = d.size
                d[...] = (recv[off:off + n] * scale).reshape(d.shape)
                off += n
        self.pending.clear()

    # -- agreement between ranks ------------------------------------------------------------
    def agree_flags(self, stop: bool, snapshot: bool) -> tuple[bool, bool]:
        flags = np.array([stop, snapshot], dtype=np.int32)
        out = np.empty_like(flags)
        self.ctx.comm.Allreduce(flags, out, op=self.MPI.MAX)
        return bool(out[0]), bool(out[1])

    def broadcast_params(self) -> None:
        for p in self.params:
            self.ctx.comm.Bcast(p.blob.data, root=0)

    def check_in_sync(self, it: int) -> None:
        """Every rank's weights equal rank 0's (a debug check): raises on a mismatch."""
        import hashlib
        h = hashlib.sha1()
        for p in self.params:
            if p.lr_mult == 0:       # running statistics are per rank (as in Caffe)
                continue
            h.update(np.ascontiguousarray(p.blob.data).tobytes())
        digests = self.ctx.comm.allgather(h.hexdigest())
        bad = [r for r, d in enumerate(digests) if d != digests[0]]
        if bad:
            raise RuntimeError(f"iteration {it}: the weights of rank(s) "
                               f"{', '.join(map(str, bad))} differ from rank 0's")
