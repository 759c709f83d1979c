"""The training loop (Caffe's Solver::Step/Solve/Test/Snapshot/Restore).

Logs go through the ``netdef.solver`` logger with Caffe's line formats, so Caffe's log parsers
read them.  Snapshots are written atomically; a ``.solverstate`` also carries, in an extension
field Caffe ignores, the random-generator state and every data layer's read position, so a run
resumed from iteration k ends bit-for-bit where the uninterrupted run ends (on the CPU).
"""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import deque

import numpy as np

from ..config.loader import Definition, load_net
from ..errors import ConfigError, FileFormatError, NetdefError
from ..io.hdf5_snapshot import (is_hdf5, load_solverstate_h5, save_caffemodel_h5,
                                save_solverstate_h5)
from ..io.files import WriteError, read_regular, remove_stale_temps, write_file
from ..io.weights import (blob_proto_array, blob_proto_shape, copy_trained_layers,
                          load_caffemodel, save_caffemodel, shape_matches, to_blob_proto)
from ..layers.base import TEST, TRAIN
from ..net import Net
from ..proto import pb
from . import updates as U
from .lr_policy import learning_rate

log = logging.getLogger("netdef.solver")


def _rng_state(rng: np.random.Generator) -> bytes:
    return json.dumps(rng.bit_generator.state).encode()


def _set_rng_state(rng: np.random.Generator, raw: bytes) -> None:
    rng.bit_generator.state = json.loads(raw.decode())


def _check_rng_state(raw: bytes, bad, whose: str) -> None:
    """Raise ``bad(...)`` unless ``raw`` is an RNG state numpy accepts."""
    try:
        _set_rng_state(np.random.default_rng(0), raw)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, OverflowError):
        raise bad(f"{whose} RNG state is corrupt") from None


class Solver:
    def __init__(self, sdef: Definition, *, dtype=np.float32, input_shapes=None,
                 level: int | None = None, stages=()):
        self.sdef = sdef
        self.param = p = sdef.message
        self.file = sdef.file
        U.validate_solver(p, file=self.file, where=sdef.where)
        self.dtype = np.dtype(dtype)
        from ..parallel.mpi import context
        self.mpi = context()          # rank layout (a single process: rank 0 of 1)
        # Caffe's Solver::Init: each rank seeds with random_seed + rank
        seed = p.random_seed + self.mpi.rank if p.random_seed >= 0 else None
        self.rng = np.random.default_rng(seed)
        self.input_shapes = input_shapes or {}
        self.rule = U.get_update_rule(p.type)(p)
        self.iter = 0
        self.current_step = 0
        self.requested_stop = False
        self.requested_snapshot = False
        self._preflight(level, stages)
        self.net = self._train_net(level, stages)
        # rank 0 alone tests (and logs and snapshots)
        self.test_nets = self._test_nets() if self.mpi.rank == 0 else []
        self.params = self.net.params
        self.device = None            # a DeviceUpdater once use_device() was called
        self.history = self.rule.init_history([pi.blob for pi in self.params])
        self.sync = None              # gradient averaging across ranks
        self.check_sync_every = 0     # debug: compare weights across ranks every N iterations
        if self.mpi.active:
            from ..parallel.mpi import GradientSync
            self.sync = GradientSync(self, self.mpi)
            self.sync.broadcast_params()
        self.losses: deque = deque(maxlen=max(1, p.average_loss))
        self.last_snapshot_iter = -1
        self.on_iteration = None      # callback(solver) after each update (tests, MPI)
        self.on_start = None          # callback(solver) at the start of each iteration
        self.on_gradients = None      # callback(solver) once the gradients are ready
        self.t_start = time.time()

    # -- nets -----------------------------------------------------------------------------
    def _resolve(self, path: str) -> str:
        if os.path.exists(path) or self.file is None:
            return path
        alt = os.path.join(os.path.dirname(os.path.abspath(self.file)), path)
        return alt if os.path.exists(alt) else path

    def _net_definition(self, which: str):
        p = self.param
        if which == "train":
            sources = [("train_net_param", p.HasField("train_net_param")),
                       ("train_net", p.HasField("train_net")),
                       ("net_param", p.HasField("net_param")), ("net", p.HasField("net"))]
            given = [s for s, ok in sources if ok]
            if len(given) != 1:
                raise ConfigError("give exactly one of net, net_param, train_net, "
                                  f"train_net_param (found {', '.join(given) or 'none'})",
                                  file=self.file)
            field = given[0]
        else:
            field = which
        if field.endswith("_param"):
            msg = getattr(p, field)
            sub = {k[1:]: v for k, v in self.sdef.smap.items() if k[:1] == (field,)}
            return Definition(msg, self.file, sub, self.sdef.format)
        return load_net(self._resolve(getattr(p, field)))

    def _train_net(self, level, stages):
        p = self.param
        state = p.train_state
        d = self._net_definition("train")
        return Net(d, TRAIN, level=level if level is not None else state.level,
                   stages=list(state.stage) + list(stages), dtype=self.dtype,
                   input_shapes=self.input_shapes, rng=self.rng)

    def _preflight(self, level, stages) -> None:
        """Refuse (one line) nets that need more memory than there is, before allocating."""
        from ..memcheck import check, preflight_net
        p = self.param
        state = p.train_state
        kw = dict(dtype=self.dtype, input_shapes=self.input_shapes)
        needs = [preflight_net(self._net_definition("train"), TRAIN, backward=True,
                               history=self.rule.history_count,
                               level=level if level is not None else state.level,
                               stages=list(state.stage) + list(stages), **kw)]
        if self.mpi.rank == 0:
            for d, st in self._test_defs():
                needs.append(preflight_net(d, TEST, backward=False, level=st.level,
                                           stages=list(st.stage), **kw))
        check(needs, "training", file=self.file)

    def _test_defs(self) -> list:
        """(definition, NetState) of each test net."""
        p = self.param
        defs = []
        for i, tn in enumerate(p.test_net_param):
            defs.append(Definition(tn, self.file, {}, self.sdef.format))
        for path in p.test_net:
            defs.append(load_net(self._resolve(path)))
        n_general = len(p.test_iter) - len(defs)
        if n_general > 0:
            if not (p.HasField("net") or p.HasField("net_param")):
                raise ConfigError(f"test_iter is given {len(p.test_iter)} times but only "
                                  f"{len(defs)} test nets are defined", file=self.file)
            gen = self._net_definition("net_param" if p.HasField("net_param") else "net")
            defs += [gen] * n_general
        if len(defs) != len(p.test_iter):
            raise ConfigError(f"{len(defs)} test nets but {len(p.test_iter)} test_iter values: "
                              f"give one test_iter per test net", file=self.file)
        if len(p.test_state) not in (0, 1, len(defs)):
            raise ConfigError("test_state must be given once or once per test net",
                              file=self.file)
        out = []
        for i, d in enumerate(defs):
            st = p.test_state[i if len(p.test_state) > 1 else 0] if len(p.test_state) \
                else pb.NetState()
            out.append((d, st))
        return out

    def _test_nets(self):
        p = self.param
        nets = []
        for d, st in self._test_defs():
            net = Net(d, TEST, level=st.level, stages=list(st.stage), dtype=self.dtype,
                      input_shapes=self.input_shapes, rng=self.rng, init_params=True)
            self._share_weights(net)
            nets.append(net)
        if nets and p.test_interval <= 0:
            log.warning("test nets are defined but test_interval is 0: they never run")
        return nets

    def _share_weights(self, test_net):
        """Caffe's ShareTrainedLayersWith: same layer name => the test layer's blobs view the
        train layer's."""
        for name, i in test_net.layer_index.items():
            if name not in self.net.layer_index:
                continue
            src = self.net.layers[self.net.layer_index[name]]
            dst = test_net.layers[i]
            if len(src.blobs) != len(dst.blobs):
                continue
            for a, b in zip(src.blobs, dst.blobs):
                if a.shape != b.shape:
                    raise ConfigError(f"layer '{name}' has a blob of shape {list(b.shape)} in "
                                      f"the test net but {list(a.shape)} in the train net",
                                      file=self.file, layer=name)
                b.share_data(a)

    def use_device(self, device_id: int = 0) -> None:
        """Train (and test) on CUDA device ``device_id``: nets in device mode, updates on the
        device (netdef.backend.cuda)."""
        if self.device is not None:
            return
        self.net.to_device(device_id)
        for net in self.test_nets:
            net.to_device(device_id)
        from ..backend.cuda.solver import DeviceUpdater
        self.device = DeviceUpdater(self)

    # -- one iteration ---------------------------------------------------------------------
    def rate(self) -> float:
        r, self.current_step = learning_rate(self.param, self.iter, self.current_step,
                                             dtype=self.dtype)
        return r

    def step(self, iters: int) -> None:
        p = self.param
        stop_iter = self.iter + iters
        t0 = time.perf_counter()
        t_iter = self.iter
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and \
                    (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested_stop and self.sync is None:
                    break
            if self.on_start is not None:
                self.on_start(self)
            loss = 0.0
            # on a GPU the forward adds the loss into a device window (no host read)
            window = self.device.loss_window if self.device is not None else None
            if window is not None:
                window.arm(self.net.device)
            for k in range(p.iter_size):
                if self.sync is not None and k == p.iter_size - 1:
                    self.sync.arm()           # average gradients during the last backward
                loss += self.net.forward_backward()
            if window is not None:
                window.close(self.net.device)
            if self.sync is not None:
                self.sync.finish()
            if self.on_gradients is not None:
                self.on_gradients(self)
            loss /= p.iter_size
            if window is None:
                self.losses.append(loss)
            display = p.display and self.iter % p.display == 0
            rate = self.rate()
            if display:
                if window is not None:
                    self.losses.clear()
                    self.losses.extend(window.losses(p.iter_size))
                smoothed = float(np.mean(self.losses))
                dt = time.perf_counter() - t0
                n = max(self.iter - t_iter, 1)
                log.info(f"Iteration {self.iter} ({n / dt if dt > 0 else 0:.4g} iter/s, "
                         f"{dt:.4g}s/{p.display} iters), loss = {smoothed:.6g}")
                t0, t_iter = time.perf_counter(), self.iter
                self._log_outputs(self.net, "Train")
                self.record({"phase": "train", "loss": smoothed, "lr": rate,
                             "outputs": self._outputs(self.net)})
            self.apply_update(display, rate)
            self.iter += 1
            # signal handlers set requested_stop/snapshot at any moment; under MPI every rank
            # acts on the flags agreed this iteration only (a request that arrives during the
            # agreement stays set for the next one), so all ranks stop and snapshot together
            do_stop, do_snapshot = self.requested_stop, self.requested_snapshot
            if self.sync is not None:
                do_stop, do_snapshot = self.sync.agree_flags(do_stop, do_snapshot)
                if self.check_sync_every and self.iter % self.check_sync_every == 0:
                    self.sync.check_in_sync(self.iter)
            if self.on_iteration is not None:
                self.on_iteration(self)
            if (p.snapshot and self.iter % p.snapshot == 0) or do_snapshot:
                self.snapshot()
                if do_snapshot:
                    self.requested_snapshot = False
            if do_stop:
                self.requested_stop = True
                break

    def _log_outputs(self, net, kind: str, values=None) -> None:
        """Caffe's "Train/Test net output #k" lines, in Caffe's output order (the output blobs
        by name: Caffe collects them in a std::set)."""
        weight = {name: net.loss_weights[i][j] for i, names in enumerate(net.top_names)
                  for j, name in enumerate(names)}
        k = 0
        for name in net.output_names:
            v = values[name] if values is not None else net.blobs[name].data
            w = weight.get(name, 0)
            for x in np.asarray(v, dtype=np.float64).reshape(-1):
                extra = f" (* {w:g} = {w * x:.6g} loss)" if w else ""
                log.info(f"    {kind} net output #{k}: {name} = {x:.6g}{extra}")
                k += 1

    def apply_update(self, display: bool = False, rate: float | None = None) -> None:
        p = self.param
        rate = self.rate() if rate is None else rate
        if display:
            log.info(f"Iteration {self.iter}, lr = {rate:.6g}")
        if self.device is not None:
            self.device.apply(rate)
            return
        diffs = [pi.blob.diff for pi in self.params]
        U.clip_gradients(diffs, p.clip_gradients)
        for i, pi in enumerate(self.params):
            blob = pi.blob
            U.update_param(self.rule, i, blob.diff, blob.data, rate * pi.lr_mult, self.history,
                           self.iter, p.iter_size, p.weight_decay, pi.decay_mult,
                           p.regularization_type)

    # -- metrics ---------------------------------------------------------------------------
    def metrics_path(self) -> str:
        return f"{self.prefix()}_metrics.jsonl"

    def start_metrics(self) -> None:
        """A run's metrics file describes that run: a fresh run starts it anew, a resumed one
        keeps the lines before the iteration it resumes from (what a killed run wrote after its
        last snapshot is dropped), so `netdef plot` draws one curve, not two runs zigzagging."""
        path = self.metrics_path()
        if self.mpi.rank != 0 or not os.path.exists(path):
            return
        kept = []
        if self.iter:
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:
                        it = json.loads(line).get("iter")
                    except (ValueError, AttributeError):
                        continue
                    if isinstance(it, int) and it < self.iter:
                        kept.append(line if line.endswith("\n") else line + "\n")
        write_file(path, "".join(kept))

    def record(self, entry: dict) -> None:
        """Append one JSON line to ``<snapshot_prefix>_metrics.jsonl`` (rank 0 only)."""
        if self.mpi.rank != 0:
            return
        path = self.metrics_path()
        d = os.path.dirname(os.path.abspath(path))
        os.makedirs(d, exist_ok=True)
        entry = {"iter": self.iter, "time": round(time.time() - self.t_start, 3), **entry}
        with open(path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def _outputs(self, net, values=None) -> dict:
        out = {}
        for name in net.output_names:
            v = np.asarray(values[name] if values is not None else net.blobs[name].data,
                           dtype=np.float64)
            out[name] = float(v) if v.size == 1 else v.reshape(-1).tolist()
        return out

    # -- testing ---------------------------------------------------------------------------
    def test_all(self) -> list[dict]:
        results = []
        for k, net in enumerate(self.test_nets):
            results.append(self.test(k))
        return results

    def test(self, k: int) -> dict:
        p = self.param
        net = self.test_nets[k]
        log.info(f"Iteration {self.iter}, Testing net (#{k})")
        sums: dict[str, np.ndarray] = {}
        loss = 0.0
        for _ in range(p.test_iter[k]):
            loss += net.forward()
            for name in net.output_names:
                v = np.asarray(net.blobs[name].data, dtype=np.float64)
                sums[name] = sums.get(name, 0) + v
        means = {n: v / p.test_iter[k] for n, v in sums.items()}
        if p.test_compute_loss:
            log.info(f"Test loss: {loss / p.test_iter[k]:.6g}")
        self._log_outputs(net, "Test", means)
        self.record({"phase": "test", "net": k, "outputs": self._outputs(net, means)})
        return means

    # -- snapshots -------------------------------------------------------------------------
    def prefix(self) -> str:
        p = self.param
        if p.snapshot_prefix:
            return p.snapshot_prefix
        if self.file:
            return os.path.splitext(self.file)[0]
        return "snapshot"

    def snapshot(self) -> tuple[str, str]:
        """Write ``<prefix>_iter_N.caffemodel`` and ``.solverstate`` (durably: see
        netdef.io.files); a full disk is one error saying the previous snapshot is intact."""
        try:
            return self._write_snapshot()
        except WriteError as e:
            prev = (f"the previous snapshot (iteration {self.last_snapshot_iter}) is intact"
                    if self.last_snapshot_iter >= 0 else
                    "no earlier snapshot of this run was written")
            raise WriteError(f"snapshot at iteration {self.iter} failed: {e.message}; {prev}",
                             file=e.file) from None

    def check_snapshot_folder(self) -> None:
        """Before training: the snapshot folder exists (it is created) and takes files, so a
        bad snapshot_prefix is an error now, not after the work is done; temp files that a
        killed run left there are removed."""
        if self.mpi.rank != 0:
            return
        prefix = self.prefix()
        d = os.path.dirname(os.path.abspath(prefix))
        line, col = self.sdef.where(("snapshot_prefix",))
        try:
            os.makedirs(d, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".netdef-probe-", dir=d)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ConfigError(f"snapshot_prefix '{prefix}': cannot write into {d} "
                              f"({e.strerror}); snapshots would fail after training",
                              file=self.file, line=line, col=col,
                              field="snapshot_prefix") from None
        for stale in remove_stale_temps(d, os.path.basename(prefix)):
            log.info(f"Removed {stale}, left by an interrupted snapshot")

    def _write_snapshot(self) -> tuple[str, str]:
        p = self.param
        h5 = p.snapshot_format == pb.SolverParameter.HDF5
        base = f"{self.prefix()}_iter_{self.iter}"
        model = base + (".caffemodel.h5" if h5 else ".caffemodel")
        sfile = base + (".solverstate.h5" if h5 else ".solverstate")
        others = self._gather_rank_states()
        if self.device is not None:
            self.device.sync_history()
        if self.mpi.rank != 0:
            self.last_snapshot_iter = self.iter
            return model, sfile
        d = os.path.dirname(os.path.abspath(model))
        os.makedirs(d, exist_ok=True)
        log.info(f"Snapshotting to {'HDF5' if h5 else 'binary proto'} file {model}")
        if h5:
            save_caffemodel_h5(self.net, model, double=self.dtype == np.float64)
        else:
            save_caffemodel(self.net, model, double=self.dtype == np.float64)
        state = pb.SolverState(iter=self.iter, learned_net=model,
                               current_step=self.current_step)
        for h in self.history:
            state.history.add().CopyFrom(to_blob_proto(h, double=h.dtype == np.float64))
        ext = state.netdef_resume
        ext.rng_state = _rng_state(self.rng)
        ext.solver_type = p.type
        for k, net in enumerate([self.net] + self.test_nets):
            tag = "train" if k == 0 else f"test{k - 1}"
            for name, layer in zip(net.layer_names, net.layers):
                st = getattr(layer, "data_state", None)
                if st is not None:
                    pos, rng = st()
                    ext.data_cursor.add(layer=f"{tag}/{name}", position=int(pos), rng_state=rng)
        for r, raw in enumerate(others, start=1):
            # the other ranks' RNG and train-reader states, under "rank<r>/..."
            other = pb.NetdefResumeState()
            other.ParseFromString(raw)
            ext.data_cursor.add(layer=f"rank{r}/solver", rng_state=other.rng_state)
            for c in other.data_cursor:
                ext.data_cursor.add(layer=f"rank{r}/{c.layer}", position=c.position,
                                    rng_state=c.rng_state)
        log.info(f"Snapshotting solver state to {'HDF5' if h5 else 'binary proto'} file "
                 f"{sfile}")
        if h5:
            save_solverstate_h5(state, self.history, sfile)
        else:
            write_file(sfile, state.SerializeToString())
        self.last_snapshot_iter = self.iter
        return model, sfile

    def _gather_rank_states(self) -> list[bytes]:
        """Rank 0: the serialized NetdefResumeState of ranks 1..R-1 (train net only)."""
        if self.sync is None:
            return []
        mine = pb.NetdefResumeState(rng_state=_rng_state(self.rng))
        for name, layer in zip(self.net.layer_names, self.net.layers):
            st = getattr(layer, "data_state", None)
            if st is not None:
                pos, rng = st()
                mine.data_cursor.add(layer=f"train/{name}", position=int(pos), rng_state=rng)
        states = self.mpi.comm.gather(mine.SerializeToString(), root=0)
        return states[1:] if self.mpi.rank == 0 else []

    def restore(self, path: str) -> None:
        """Resume from a .solverstate (or .solverstate.h5). The whole state is checked before
        any of it is applied -- solver type, RNG state, history count and shapes, the learned
        net -- and a bad one is one error naming the snapshot and what is wrong."""
        state = pb.SolverState()
        try:
            if is_hdf5(path):
                state = load_solverstate_h5(path)
            else:
                state.ParseFromString(read_regular(path, "solver state"))
        except NetdefError:
            raise
        except Exception as e:  # DecodeError
            raise FileFormatError(f"not a valid .solverstate ({e})", file=path) from None

        def bad(msg):
            return FileFormatError(f"cannot resume from this snapshot: {msg}", file=path)

        ext = state.netdef_resume
        if ext.solver_type and ext.solver_type != self.param.type:
            raise bad(f"it was written by a {ext.solver_type} solver, this one is "
                      f"{self.param.type} (type)")
        if state.iter < 0 or state.current_step < 0:
            raise bad(f"iteration {state.iter} / step {state.current_step} is negative")
        if ext.HasField("rng_state"):
            _check_rng_state(ext.rng_state, bad, "the solver's")
        for c in ext.data_cursor:
            if c.layer.endswith("/solver"):
                _check_rng_state(c.rng_state, bad, f"'{c.layer}'")
        if len(state.history) != len(self.history):
            raise bad(f"it holds {len(state.history)} history blobs but a {self.param.type} "
                      f"solver of this net needs {len(self.history)}")
        names = [f"{pi.layer}[{pi.index}]" for pi in self.params]
        for j, (h, bp) in enumerate(zip(self.history, state.history)):
            owner = names[j % len(names)] if names else "?"
            if not shape_matches(bp, h.shape):
                raise bad(f"history blob {j} ({owner}) has shape {list(blob_proto_shape(bp))}"
                          f" but the net needs {list(h.shape)}")
            n = len(bp.double_data) or len(bp.data)
            if n != h.size:
                raise bad(f"history blob {j} ({owner}) holds {n} values but its shape needs "
                          f"{h.size} (truncated file?)")
        learned = state.learned_net
        if not learned:
            raise bad("it names no learned_net (the .caffemodel written with it)")
        if not isinstance(learned, str) or "\x00" in learned:
            raise bad(f"its learned_net {learned!r} is not a file name")
        if not os.path.exists(learned):
            alt = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.basename(learned))
            learned = alt
        try:
            copied = copy_trained_layers(self.net, load_caffemodel(learned), learned)
        except NetdefError as e:
            raise bad(f"its learned_net {state.learned_net!r}: {e}") from None
        if self.params and not copied:
            raise bad(f"its learned_net {state.learned_net!r} matches no layer of this net")
        for h, bp in zip(self.history, state.history):
            h[...] = blob_proto_array(bp, h.shape)
        if self.device is not None:
            self.device.history_changed()
        self.iter = state.iter
        self.current_step = state.current_step
        ext = state.netdef_resume
        cursors = {c.layer: c for c in ext.data_cursor}
        rank = self.mpi.rank
        if rank:
            mine = f"rank{rank}/"
            cursors = {k[len(mine):]: c for k, c in cursors.items() if k.startswith(mine)}
            if "solver" in cursors:
                _set_rng_state(self.rng, cursors["solver"].rng_state)
        elif ext.HasField("rng_state"):
            _set_rng_state(self.rng, ext.rng_state)
        for k, net in enumerate([self.net] + self.test_nets):
            tag = "train" if k == 0 else f"test{k - 1}"
            for name, layer in zip(net.layer_names, net.layers):
                setter = getattr(layer, "set_data_state", None)
                c = cursors.get(f"{tag}/{name}")
                if setter is not None and c is not None:
                    setter(c.position, c.rng_state or None)
        log.info(f"Restored solver state from {path} (iteration {self.iter})")

    # -- the whole run -----------------------------------------------------------------------
    def solve(self, resume: str | None = None) -> None:
        p = self.param
        log.info(f"Solving {self.net.name}")
        log.info(f"Learning Rate Policy: {p.lr_policy}")
        self.check_snapshot_folder()
        if resume:
            self.restore(resume)
        self.start_metrics()
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and self.last_snapshot_iter != self.iter:
            self.snapshot()
        if self.requested_stop and self.iter < p.max_iter:
            log.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            window = self.device.loss_window if self.device is not None else None
            if window is not None:
                self.losses.clear()
                self.losses.extend(window.losses(p.iter_size))
            loss = self.net.forward()
            self.losses.append(loss)
            log.info(f"Iteration {self.iter}, loss = {float(np.mean(self.losses)):.6g}")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        log.info("Optimization Done.")
