"""Commands that run nets: train, test, time."""
from __future__ import annotations

import json
import sys
from contextlib import nullcontext

import click

from .app import PHASE, cli, parse_input_shapes, python_layers_option, user_errors
from .progress import for_command

EFFECT = click.Choice(["snapshot", "stop", "none"])

progress_option = click.option(
    "--progress/--no-progress", "progress", default=None,
    help="one updating progress line on stderr (default: only when stderr is a terminal)")


def _stages(values) -> list[str]:
    out = []
    for v in values:
        out += [x for x in v.split(",") if x]
    return out


def _check_gpu(gpu, mode_gpu: bool = False, device_id: int = 0, where=None):
    """The CUDA device to use, or None for the CPU: an explicit ``--gpu`` wins (-1: the CPU),
    else ``solver_mode: GPU`` with its ``device_id``.  A one-line error when there is no usable
    GPU (netdef.backend.cuda), naming what asked for it: the flag, or ``solver_mode`` at
    ``where`` = (file, line, col) of the solver."""
    from netdef.errors import ConfigError
    from netdef.parallel.mpi import context
    local = context().local_rank if context().active else 0
    if gpu in (None, ""):
        if not mode_gpu:
            return None
        gid = int(device_id) + local     # MPI ranks of one machine: one device each
    else:
        ids = gpu_ids(gpu)
        gid = ids[local % len(ids)] if len(ids) > 1 else ids[0] + local
        if ids[0] < 0:
            return None
    from netdef.backend.cuda.device import NoDeviceError, select_device
    try:
        select_device(gid)
    except NoDeviceError as e:
        if gpu in (None, ""):
            file, line, col = where or (None, None, None)
            raise ConfigError(f"solver_mode: GPU asks for {e.message}; set solver_mode: CPU "
                              f"or pass --gpu -1 to train on the CPU", file=file, line=line,
                              col=col, field="solver_mode") from None
        raise ConfigError(f"{e.message}; leave out --gpu (and use solver_mode: CPU) to run on "
                          f"the CPU") from None
    return gid


def gpu_ids(gpu) -> list[int]:
    """``--gpu`` as device ids: ``0``, a list ``0,1``, ``all`` (every device), ``-1`` (CPU)."""
    from netdef.errors import ConfigError
    if str(gpu).strip().lower() == "all":
        from netdef.backend.cuda.device import NoDeviceError, available, cuda
        if not available():
            from netdef.backend.cuda.device import select_device
            try:
                select_device(0)        # raises, saying why there is no GPU
            except NoDeviceError as e:
                raise ConfigError(f"--gpu all: {e.message}") from None
        return list(range(len(cuda().gpus)))
    try:
        ids = [int(x) for x in str(gpu).split(",") if x.strip()]
    except ValueError:
        ids = []
    if not ids:
        raise ConfigError(f"--gpu {gpu}: give a device number (e.g. 0), a list (0,1) or 'all' "
                          f"(one MPI rank per device), or -1 for the CPU")
    return ids


def _train_on_devices(ids: list[int]) -> int:
    """``train --gpu 0,1`` outside mpiexec: the same command again under the MPI launcher, one
    rank per listed device (rank k takes the k-th id); its exit status."""
    import importlib.util
    import os
    import shutil
    import subprocess

    from netdef.errors import ConfigError
    from . import app
    bindir = os.path.dirname(sys.executable)
    mpiexec = shutil.which("mpiexec", path=bindir) or shutil.which("mpiexec")
    if mpiexec is None or importlib.util.find_spec("mpi4py") is None:
        raise ConfigError(f"--gpu {','.join(map(str, ids))} trains one MPI rank per device, but "
                          f"{'mpiexec' if mpiexec is None else 'mpi4py'} is not installed "
                          f"(pip install 'netdef[mpi]'); give one device (--gpu {ids[0]}) to "
                          f"train on one")
    if app.ARGV is None:
        raise ConfigError("--gpu with several devices needs the netdef command line "
                          "(run it as `netdef train ...`)")
    argv, it = [], iter(app.ARGV)
    listed = ",".join(map(str, ids))
    for a in it:
        if a == "--gpu":
            argv += [a, listed]
            next(it, None)
        elif a.startswith("--gpu="):
            argv.append(f"--gpu={listed}")
        else:
            argv.append(a)
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
    cmd = [mpiexec, "-n", str(len(ids)), sys.executable, "-m", "netdef_cli.main", *argv]
    import logging
    logging.getLogger("netdef.train").info(
        f"--gpu {listed}: data-parallel over {len(ids)} devices: {' '.join(cmd)}")
    return subprocess.run(cmd, env=env, check=False).returncode


@cli.command()
@click.option("--solver", "solver_file", required=True, type=click.Path(dir_okay=False),
              help="solver definition (prototxt or YAML)")
@click.option("--weights", default="", help="initialise from these .caffemodel files (a,b)")
@click.option("--snapshot", "resume", default="", help="resume from this .solverstate")
@click.option("--gpu", default=None,
              help="CUDA device id (-1: the CPU); a list 0,1 or 'all': one MPI rank per device "
                   "(started under mpiexec); under mpiexec, rank k of a machine takes id+k")
@click.option("--level", type=int, default=None, help="train_state level")
@click.option("--stage", "stages", multiple=True, help="train_state stages (comma list)")
@click.option("--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
              metavar="BLOB=N,C,H,W", help="shape of a data top (repeatable)")
@click.option("--sigint_effect", "--sigint-effect", "sigint", type=EFFECT, default="stop",
              show_default=True, help="what Ctrl-C does")
@click.option("--sighup_effect", "--sighup-effect", "sighup", type=EFFECT, default="snapshot",
              show_default=True, help="what SIGHUP does")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--set", "overrides", multiple=True, metavar="FIELD=VALUE",
              help="override a solver field, e.g. --set max_iter=100 (repeatable)")
@click.option("--check-sync", type=int, default=0, metavar="N",
              help="under MPI: verify every N iterations that all ranks hold the same weights")
@progress_option
@python_layers_option(runs_by_default=True)
@user_errors
def train(solver_file, weights, resume, gpu, level, stages, input_shapes, sigint, sighup,
          dtype, overrides, progress, check_sync):
    """Train a net with a solver (Caffe's `caffe train`).

    Started by mpiexec with several ranks, trains one model data-parallel: batch_size is per
    rank, gradients are averaged, rank 0 logs, tests and snapshots."""
    from netdef.parallel.mpi import init

    ctx = init()
    if not ctx.active and gpu not in (None, "") and len(gpu_ids(gpu)) > 1:
        from netdef_cli.logfmt import setup_logging
        setup_logging()
        sys.exit(_train_on_devices(gpu_ids(gpu)))
    if not ctx.active:
        return _train(solver_file, weights, resume, gpu, level, stages, input_shapes, sigint,
                      sighup, dtype, overrides, progress, check_sync)
    import logging
    import traceback

    from netdef.errors import NetdefError
    from netdef_cli.logfmt import setup_logging
    if ctx.rank != 0:                      # rank 0 alone logs
        setup_logging(logging.WARNING)
        progress = False
    try:
        _train(solver_file, weights, resume, gpu, level, stages, input_shapes, sigint, sighup,
               dtype, overrides, progress, check_sync)
    except BaseException as e:           # one rank failing stops the whole job at once
        if isinstance(e, SystemExit) and not e.code:
            raise
        if isinstance(e, NetdefError):
            msg = f"error: rank {ctx.rank}: {e}"
        else:
            msg = f"error: rank {ctx.rank}: {type(e).__name__}: {e}\n" + \
                "".join(traceback.format_exception(e))
        import os
        import time
        sys.stderr.flush()
        os.write(2, (msg.rstrip("\n") + "\n").encode())
        time.sleep(1.0)       # let the launcher forward the message before it tears down
        ctx.abort(2 if isinstance(e, NetdefError) else 1)
        raise


def _train(solver_file, weights, resume, gpu, level, stages, input_shapes, sigint, sighup,
           dtype, overrides, progress, check_sync):
    import signal

    from netdef.config import load_solver
    from netdef.errors import ConfigError
    from netdef.io.weights import load_weights
    from netdef.solvers.solver import Solver
    from netdef_cli.logfmt import setup_logging

    setup_logging()
    if weights and resume:
        raise ConfigError("give either --weights (fine-tune) or --snapshot (resume), not both")
    d = load_solver(solver_file)
    apply_overrides(d.message, overrides)
    gid = _check_gpu(gpu, d.message.solver_mode == d.message.GPU and
                     d.message.HasField("solver_mode"), d.message.device_id,
                     (d.file, *d.where(("solver_mode",))))
    solver = Solver(d, dtype=dtype, input_shapes=input_shapes, level=level,
                    stages=_stages(stages))
    solver.check_sync_every = check_sync
    if weights:
        load_weights(solver.net, weights)
    if gid is not None:
        solver.use_device(gid)

    def handler(effect):
        def h(signum, frame):
            if effect == "snapshot":
                solver.requested_snapshot = True
            elif effect == "stop":
                solver.requested_stop = True
        return h

    if sigint != "none":
        signal.signal(signal.SIGINT, handler(sigint))
    else:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, handler(sighup) if sighup != "none" else signal.SIG_IGN)
    bar = for_command(progress, d.message.max_iter)
    if bar is None:
        solver.solve(resume or None)
        return
    chained = solver.on_iteration

    def on_iteration(s):
        bar.update(s.iter, sum(s.losses) / len(s.losses) if s.losses else None)
        if chained is not None:
            chained(s)

    solver.on_iteration = on_iteration
    with bar:
        solver.solve(resume or None)


def apply_overrides(message, overrides) -> None:
    """``--set field=value``: typed and checked like the file's own fields."""
    from netdef.config.build import build_message
    from netdef.config.yamlfmt import parse_yaml
    from netdef.errors import ConfigError

    for item in overrides:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError(f"--set {item!r}: expected FIELD=VALUE")
        tmp = type(message)()
        build_message(parse_yaml(f"{key}: {value}", f"--set {key}"), tmp, f"--set {key}",
                      prototxt=False)
        for fd, _ in tmp.ListFields():
            message.ClearField(fd.name)
        message.MergeFrom(tmp)


def _label_classes(net) -> dict:
    """{blob: number of classes} for blobs read as class labels: the second bottom of a loss
    that takes class indices, or of Accuracy; the classes are its first bottom's extent on
    the class axis (1 when it has none)."""
    out = {}
    for layer, bottoms, names in zip(net.layers, net.bottoms, net.bottom_names):
        if layer.type in ("SoftmaxWithLoss", "Accuracy", "MultinomialLogisticLoss",
                          "InfogainLoss", "HingeLoss") and len(names) > 1:
            shape = bottoms[0].shape
            out[names[1]] = max(1, shape[1] if len(shape) > 1 else 1)
    # labels reach the loss through Split layers: follow them back to their source blob
    for layer, bottoms, tops, bnames, tnames in zip(net.layers, net.bottoms, net.tops,
                                                    net.bottom_names, net.top_names):
        if layer.type == "Split" and any(t in out for t in tnames):
            out[bnames[0]] = max(out[t] for t in tnames if t in out)
    return out


def _model_net(model, weights, phase, level, stages, input_shapes, dtype, backward=False):
    from netdef.config import load_net
    from netdef.io.weights import load_weights
    from netdef.memcheck import check, preflight_net
    from netdef.net import Net

    d = load_net(model)
    kw = dict(level=level, stages=_stages(stages), dtype=dtype, input_shapes=input_shapes)
    check([preflight_net(d, phase, backward=backward, **kw)], "this net", file=model)
    net = Net(d, phase, **kw)
    if weights:
        load_weights(net, weights)
    return net


@cli.command()
@click.option("--model", required=True, type=click.Path(dir_okay=False))
@click.option("--weights", default="", help=".caffemodel file(s) (a,b)")
@click.option("--iterations", type=int, default=50, show_default=True)
@click.option("--gpu", default=None)
@click.option("--level", type=int, default=None)
@click.option("--stage", "stages", multiple=True)
@click.option("--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
              metavar="BLOB=N,C,H,W")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON object of the means")
@progress_option
@python_layers_option(runs_by_default=True)
@user_errors
def test(model, weights, iterations, gpu, level, stages, input_shapes, as_json, progress):
    """Score a model: forward passes in the TEST phase, per-batch and mean outputs."""
    import logging

    import numpy as np

    from netdef.layers import TEST as TEST_PHASE
    from netdef_cli.logfmt import setup_logging

    setup_logging()
    log = logging.getLogger("netdef.test")
    gid = _check_gpu(gpu)
    if not weights:
        log.warning("no --weights given: testing an untrained net")
    net = _model_net(model, weights, TEST_PHASE, level, stages, input_shapes, "float32")
    if gid is not None:
        net.to_device(gid)
    sums: dict = {}
    total_loss = 0.0
    with for_command(progress, iterations, label="batch") or nullcontext() as bar:
        for it in range(iterations):
            total_loss += net.forward()
            for name in net.output_names:
                v = np.asarray(net.blobs[name].data, dtype=np.float64).reshape(-1)
                sums[name] = sums.get(name, 0) + v
                for x in v:
                    log.info(f"Batch {it}, {name} = {x:.6g}")
            if bar is not None:
                bar.update(it + 1, total_loss / (it + 1))
    log.info(f"Loss: {total_loss / max(iterations, 1):.6g}")
    weights_of = {}
    for i, names in enumerate(net.top_names):
        for j, name in enumerate(names):
            weights_of[name] = net.loss_weights[i][j]
    means = {}
    for name, v in sums.items():
        m = v / max(iterations, 1)
        means[name] = float(m[0]) if m.size == 1 else m.tolist()
        for x in m:
            w = weights_of.get(name, 0)
            extra = f" (* {w:g} = {w * x:.6g} loss)" if w else ""
            log.info(f"{name} = {x:.6g}{extra}")
    if as_json:
        click.echo(json.dumps(means))


@cli.command("time")
@click.option("--model", required=True, type=click.Path(dir_okay=False))
@click.option("--phase", type=PHASE, default="TRAIN", show_default=True)
@click.option("--iterations", type=int, default=50, show_default=True)
@click.option("--gpu", default=None)
@click.option("--level", type=int, default=None)
@click.option("--stage", "stages", multiple=True)
@click.option("--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
              metavar="BLOB=N,C,H,W")
@click.option("--weights", default="")
@click.option("--json", "as_json", is_flag=True, help="end with one JSON object of the times")
@python_layers_option(runs_by_default=True)
@user_errors
def time_cmd(model, phase, iterations, gpu, level, stages, input_shapes, weights, as_json):
    """Benchmark per-layer forward and backward times: data layers with readable sources run
    and are timed; Input/DummyData tops are random, those read as labels zero."""
    import logging
    import time as _time

    import numpy as np

    from netdef.net import PHASES
    from netdef_cli.logfmt import setup_logging

    setup_logging()
    log = logging.getLogger("netdef.time")
    gid = _check_gpu(gpu)
    net = _model_net(model, weights, PHASES[phase.upper()], level, stages, input_shapes,
                     "float32", backward=True)
    dev = net.to_device(gid) if gid is not None else None
    log.info("Use CPU." if gid is None else f"Use GPU with device ID {gid}")
    from netdef.errors import NetdefError
    rng = np.random.default_rng(0)
    data_layers = set()        # filled once here, not run: Input, DummyData, unreadable sources
    labels = _label_classes(net)
    for i, layer in enumerate(net.layers):
        if not getattr(layer, "is_data", False):
            continue
        if layer.type not in ("Input", "DummyData"):
            try:                # a readable source runs (and is timed), as in Caffe
                layer.forward(net.bottoms[i], net.tops[i])
                continue
            except NetdefError as e:
                log.warning(f"layer '{net.layer_names[i]}' ({layer.type}) cannot read its "
                            f"data ({e.message}): it is fed random data and not timed")
        data_layers.add(i)
        for t, name in zip(net.tops[i], net.top_names[i]):
            if name in labels:      # a loss's or accuracy's label: zero, a valid class
                t.data = np.zeros(t.shape, np.float32)
            else:
                t.data = rng.standard_normal(t.shape)
    n = len(net.layers)
    fwd, bwd = np.zeros(n), np.zeros(n)

    def forward(record):
        loss = 0.0
        for i in range(n):
            if i in data_layers:
                continue
            t = _time.perf_counter()
            if dev is not None:
                dev.layer_forward(i)
            else:
                net.layers[i].forward(net.bottoms[i], net.tops[i])
            if record:
                fwd[i] += _time.perf_counter() - t
        for i in range(n):
            for t, w in zip(net.tops[i], net.loss_weights[i]):
                if w:
                    loss += w * float(np.sum(t.data))
        return loss

    def backward(record):
        net.seed_loss_diffs()
        for i in range(n - 1, -1, -1):
            if net.layer_need_backward[i] and i not in data_layers:
                t = _time.perf_counter()
                if dev is not None:
                    dev.layer_backward(i)
                else:
                    net.layers[i].backward(net.tops[i], net.bottom_need_backward[i],
                                           net.bottoms[i])
                if record:
                    bwd[i] += _time.perf_counter() - t

    log.info("Performing Forward")      # warm-up (compiles kernels), as Caffe's time
    log.info(f"Initial loss: {forward(False):g}")
    log.info("Performing Backward")
    backward(False)
    log.info("*** Benchmark begins ***")
    log.info(f"Testing for {iterations} iterations.")
    t0 = _time.perf_counter()
    for j in range(iterations):
        ti = _time.perf_counter()
        forward(True)
        backward(True)
        log.info(f"Iteration: {j + 1} forward-backward time: "
                 f"{1e3 * (_time.perf_counter() - ti):.4f} ms.")
    total = _time.perf_counter() - t0
    log.info("Average time per layer: ")
    for i in range(n):
        log.info(f"{net.layer_names[i]:>10}\tforward: {1e3 * fwd[i] / max(iterations, 1):.4f} "
                 f"ms.")
        log.info(f"{net.layer_names[i]:>10}\tbackward: {1e3 * bwd[i] / max(iterations, 1):.4f} "
                 f"ms.")
    it = max(iterations, 1)
    log.info(f"Average Forward pass: {1e3 * fwd.sum() / it:.4f} ms.")
    log.info(f"Average Backward pass: {1e3 * bwd.sum() / it:.4f} ms.")
    log.info(f"Average Forward-Backward: {1e3 * (fwd.sum() + bwd.sum()) / it:.4f} ms.")
    log.info(f"Total Time: {1e3 * total:.4f} ms.")
    log.info("*** Benchmark ends ***")
    if as_json:
        it = max(iterations, 1)
        click.echo(json.dumps({
            "forward_ms": 1e3 * fwd.sum() / it, "backward_ms": 1e3 * bwd.sum() / it,
            "forward_backward_ms": 1e3 * (fwd.sum() + bwd.sum()) / it,
            "iterations": iterations,
            "layers": [{"name": net.layer_names[i], "type": net.layers[i].type,
                        "forward_ms": 1e3 * fwd[i] / it, "backward_ms": 1e3 * bwd[i] / it}
                       for i in range(n)]}))
