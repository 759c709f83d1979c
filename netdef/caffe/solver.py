"""pycaffe's solvers over :class:`netdef.solvers.solver.Solver`: ``SGDSolver(path)`` and the
other five, ``get_solver(path)`` (the type named in the file).  ``step(n)`` runs n iterations
exactly as ``netdef train`` does (tests at ``test_interval``, snapshots only at ``snapshot``
intervals); ``solve()`` is ``netdef train``'s whole run (log lines, snapshots, metrics)."""
from __future__ import annotations

from . import runtime
from .net import Net


class _Solver:
    #: the solver type this class forces (None: the file's ``type``)
    solver_type: str | None = None

    def __init__(self, solver_file):
        from ..config import load_solver
        from ..solvers.solver import Solver
        d = load_solver(str(solver_file))
        p = d.message
        if self.solver_type is not None:
            p.type = self.solver_type
        if p.random_seed < 0 and runtime.random_seed() is not None:
            p.random_seed = runtime.random_seed()
        self._s = Solver(d)
        self._callbacks = []
        dev = runtime.device()
        if dev is not None:
            self._s.use_device(dev)
        self._net = Net(self._s.net)
        self._test_nets = [Net(t) for t in self._s.test_nets]
        self._s.on_start = self._on_start
        self._s.on_gradients = self._on_gradients

    def _on_start(self, _solver) -> None:
        for start, _ in self._callbacks:
            start()

    def _on_gradients(self, _solver) -> None:
        for _, grads in self._callbacks:
            grads()

    # -- attributes -----------------------------------------------------------------------
    @property
    def net(self) -> Net:
        return self._net

    @property
    def test_nets(self) -> list:
        return self._test_nets

    @property
    def iter(self) -> int:
        return self._s.iter

    @property
    def param(self):
        return self._s.param

    @property
    def core(self):
        """The :class:`netdef.solvers.solver.Solver` underneath."""
        return self._s

    # -- running --------------------------------------------------------------------------
    def step(self, iters: int) -> None:
        self._s.step(int(iters))

    def solve(self, resume_file=None) -> None:
        self._s.solve(str(resume_file) if resume_file else None)

    def restore(self, state_file) -> None:
        self._s.restore(str(state_file))

    def snapshot(self) -> None:
        self._s.snapshot()

    def share_weights(self, net) -> None:
        """``net`` (a test or deploy Net) views this solver's train-net weights by layer name."""
        self._s._share_weights(net.core if isinstance(net, Net) else net)

    def apply_update(self) -> None:
        self._s.apply_update()

    def add_callback(self, on_start, on_gradients) -> None:
        """``on_start()`` at the start of each iteration, ``on_gradients()`` once its
        gradients are ready (before the update)."""
        self._callbacks.append((on_start, on_gradients))


class SGDSolver(_Solver):
    solver_type = "SGD"


class NesterovSolver(_Solver):
    solver_type = "Nesterov"


class AdaGradSolver(_Solver):
    solver_type = "AdaGrad"


class RMSPropSolver(_Solver):
    solver_type = "RMSProp"


class AdaDeltaSolver(_Solver):
    solver_type = "AdaDelta"


class AdamSolver(_Solver):
    solver_type = "Adam"


def get_solver(solver_file) -> _Solver:
    """A solver of the type named in ``solver_file`` (``type``, or the legacy
    ``solver_type`` enum; default SGD)."""
    return _Solver(solver_file)
