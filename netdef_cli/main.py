"""The `netdef` command line: parse flags, call the library, format the output.

User errors (:class:`netdef.errors.NetdefError`) print one line and exit with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import functools
import json
import sys

import click

from netdef import __version__
from netdef.errors import NetdefError

EXIT_USER_ERROR = 2


def user_errors(fn):
    """Turn NetdefError into a one-line message and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NetdefError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USER_ERROR)
    return wrapper


def parse_input_shapes(ctx, param, values) -> dict:
    shapes = {}
    for v in values:
        name, eq, dims = v.partition("=")
        try:
            if not eq or not name:
                raise ValueError
            shape = tuple(int(x) for x in dims.replace("x", ",").split(",") if x.strip())
            if not shape or any(d < 0 for d in shape):
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"{v!r}: expected BLOB=N,C,H,W (e.g. data=64,1,28,28)")
        shapes[name] = shape
    return shapes


PHASE = click.Choice(["TRAIN", "TEST"], case_sensitive=False)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="netdef")
def cli():
    """netdef: Caffe-style declarative deep learning (prototxt/YAML nets on Numba kernels)."""


@cli.command()
@click.argument("net", type=click.Path(dir_okay=False))
@click.option("--phase", type=PHASE, default="TEST", show_default=True,
              help="which layers to include (NetState phase)")
@click.option("--level", type=int, default=None, help="NetState level")
@click.option("--stage", "stages", multiple=True, help="NetState stage (repeatable)")
@click.option("--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
              metavar="BLOB=N,C,H,W", help="shape of a data/Input top (repeatable)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True, help="for memory figures")
@user_errors
def summary(net, phase, level, stages, input_shapes, as_json, dtype):
    """Shapes, learnable parameters, FLOPs and memory of NET, per layer, without running it."""
    from netdef.analysis import analyze, format_table
    from netdef.config import load_net
    from netdef.net import PHASES, Net

    d = load_net(net)
    n = Net(d, PHASES[phase.upper()], level=level, stages=stages, dtype=dtype,
            input_shapes=input_shapes, init_params=False)
    stats = analyze(n)
    if as_json:
        click.echo(json.dumps(stats.to_json()))
    else:
        for note in d.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(format_table(stats))


def _detect_kind(path: str) -> str:
    """'net' or 'solver', from the top-level field names of a text definition."""
    from netdef.config.loader import _read_text, file_format
    from netdef.config.prototxt import parse_prototxt
    from netdef.config.yamlfmt import parse_yaml
    from netdef.proto import pb

    fmt = file_format(path)
    if fmt == "binary":
        return "net"
    text = _read_text(path)
    tree = parse_yaml(text, path) if fmt == "yaml" else parse_prototxt(text, path)
    keys = {e.key for e in tree.entries}
    net_f = set(pb.NetParameter.DESCRIPTOR.fields_by_name)
    sol_f = set(pb.SolverParameter.DESCRIPTOR.fields_by_name)
    return "solver" if len(keys & sol_f) > len(keys & net_f) else "net"


KIND = click.Choice(["auto", "net", "solver"])


def _write(message, out: str) -> None:
    from netdef.config import file_format, to_text, write_atomic

    fmt = file_format(out)
    if fmt == "binary":
        write_atomic(out, message.SerializeToString())
    else:
        write_atomic(out, to_text(message, fmt))


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--kind", type=KIND, default="auto", show_default=True,
              help="what the file holds (auto: from its fields)")
@user_errors
def convert(src, dst, kind):
    """Convert a net or solver definition between prototxt and YAML (by file extension)."""
    from netdef.config import load_message
    from netdef.proto import pb

    kind = _detect_kind(src) if kind == "auto" else kind
    msg = pb.SolverParameter() if kind == "solver" else pb.NetParameter()
    d = load_message(src, msg)
    _write(d.message, dst)


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--kind", type=KIND, default="auto", show_default=True)
@user_errors
def upgrade(src, dst, kind):
    """Upgrade a legacy (V0/V1) net or old solver to the current format."""
    from netdef.config import load_net, load_solver

    kind = _detect_kind(src) if kind == "auto" else kind
    d = load_solver(src) if kind == "solver" else load_net(src)
    for note in d.notes or ["already in the current format"]:
        click.echo(f"note: {note}", err=True)
    _write(d.message, dst)


@cli.command("layers")
@click.option("--json", "as_json", is_flag=True, help="print one JSON list")
def layers_cmd(as_json):
    """List every registered layer type, its parameter message and its kernels."""
    from netdef.layers.registry import get_layer_class, layer_types, param_field
    from netdef.proto import pb

    rows = []
    for t in layer_types():
        field = param_field(t)
        msg = None
        if field and field in pb.LayerParameter.DESCRIPTOR.fields_by_name:
            msg = pb.LayerParameter.DESCRIPTOR.fields_by_name[field].message_type.name
        cls = get_layer_class(t)
        rows.append({"type": t, "param_field": field, "param_message": msg,
                     "cpu": True, "cuda": bool(getattr(cls, "has_cuda", False)),
                     "doc": (cls.__doc__ or "").strip().split("\n")[0]})
    if as_json:
        click.echo(json.dumps(rows))
        return
    w = max(len(r["type"]) for r in rows)
    for r in rows:
        kern = "cpu" + (",cuda" if r["cuda"] else "")
        click.echo(f"{r['type']:<{w}}  {r['param_field'] or '-':<24} {kern:<9} {r['doc']}")


EFFECT = click.Choice(["snapshot", "stop", "none"])


def _stages(values) -> list[str]:
    out = []
    for v in values:
        out += [x for x in v.split(",") if x]
    return out


def _check_gpu(gpu) -> None:
    if gpu not in (None, "", "-1"):
        from netdef.errors import ConfigError
        raise ConfigError(f"--gpu {gpu}: the CUDA backend is not available in this build yet; "
                          f"train on the CPU (leave out --gpu)")


@cli.command()
@click.option("--solver", "solver_file", required=True, type=click.Path(dir_okay=False),
              help="solver definition (prototxt or YAML)")
@click.option("--weights", default="", help="initialise from these .caffemodel files (a,b)")
@click.option("--snapshot", "resume", default="", help="resume from this .solverstate")
@click.option("--gpu", default=None, help="GPU id (not available yet)")
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
@user_errors
def train(solver_file, weights, resume, gpu, level, stages, input_shapes, sigint, sighup,
          dtype, overrides):
    """Train a net with a solver (Caffe's `caffe train`)."""
    import signal

    from netdef.config import load_solver
    from netdef.errors import ConfigError
    from netdef.io.weights import load_weights
    from netdef.solvers.solver import Solver
    from netdef_cli.logfmt import setup_logging

    setup_logging()
    if weights and resume:
        raise ConfigError("give either --weights (fine-tune) or --snapshot (resume), not both")
    _check_gpu(gpu)
    d = load_solver(solver_file)
    apply_overrides(d.message, overrides)
    if d.message.solver_mode == d.message.GPU and d.message.HasField("solver_mode"):
        _check_gpu(str(d.message.device_id))
    solver = Solver(d, dtype=dtype, input_shapes=input_shapes, level=level,
                    stages=_stages(stages))
    if weights:
        load_weights(solver.net, weights)

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


def _model_net(model, weights, phase, level, stages, input_shapes, dtype):
    from netdef.config import load_net
    from netdef.io.weights import load_weights
    from netdef.net import Net

    net = Net(load_net(model), phase, level=level, stages=_stages(stages), dtype=dtype,
              input_shapes=input_shapes)
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
@user_errors
def test(model, weights, iterations, gpu, level, stages, input_shapes, as_json):
    """Score a model: forward passes in the TEST phase, per-batch and mean outputs."""
    import logging

    import numpy as np

    from netdef.layers import TEST as TEST_PHASE
    from netdef_cli.logfmt import setup_logging

    setup_logging()
    log = logging.getLogger("netdef.test")
    _check_gpu(gpu)
    if not weights:
        log.warning("no --weights given: testing an untrained net")
    net = _model_net(model, weights, TEST_PHASE, level, stages, input_shapes, "float32")
    sums: dict = {}
    total_loss = 0.0
    for it in range(iterations):
        total_loss += net.forward()
        for name in net.output_names:
            v = np.asarray(net.blobs[name].data, dtype=np.float64).reshape(-1)
            sums[name] = sums.get(name, 0) + v
            for x in v:
                log.info(f"Batch {it}, {name} = {x:.6g}")
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
@user_errors
def time_cmd(model, phase, iterations, gpu, level, stages, input_shapes, weights, as_json):
    """Benchmark per-layer forward and backward times (data layers are fed random data)."""
    import logging
    import time as _time

    import numpy as np

    from netdef.net import PHASES
    from netdef_cli.logfmt import setup_logging

    setup_logging()
    log = logging.getLogger("netdef.time")
    _check_gpu(gpu)
    net = _model_net(model, weights, PHASES[phase.upper()], level, stages, input_shapes,
                     "float32")
    rng = np.random.default_rng(0)
    data_layers = set()
    for i, layer in enumerate(net.layers):
        if getattr(layer, "is_data", False):
            data_layers.add(i)
            for k, t in enumerate(net.tops[i]):
                t.data = rng.standard_normal(t.shape) if k == 0 else np.zeros(t.shape)
    n = len(net.layers)
    fwd, bwd = np.zeros(n), np.zeros(n)

    def run(record):
        for i in range(n):
            if i in data_layers:
                continue
            t = _time.perf_counter()
            net.layers[i].forward(net.bottoms[i], net.tops[i])
            if record:
                fwd[i] += _time.perf_counter() - t
        net.seed_loss_diffs()
        for i in range(n - 1, -1, -1):
            if net.layer_need_backward[i] and i not in data_layers:
                t = _time.perf_counter()
                net.layers[i].backward(net.tops[i], net.bottom_need_backward[i], net.bottoms[i])
                if record:
                    bwd[i] += _time.perf_counter() - t

    log.info("Performing Forward")
    run(False)   # warm-up (compiles kernels)
    t0 = _time.perf_counter()
    for _ in range(iterations):
        run(True)
    total = _time.perf_counter() - t0
    for i in range(n):
        log.info(f"{net.layer_names[i]:>20}\tforward: {1e3 * fwd[i] / iterations:.4f} ms.")
        log.info(f"{net.layer_names[i]:>20}\tbackward: {1e3 * bwd[i] / iterations:.4f} ms.")
    log.info(f"Average Forward pass: {1e3 * fwd.sum() / iterations:.4f} ms.")
    log.info(f"Average Backward pass: {1e3 * bwd.sum() / iterations:.4f} ms.")
    log.info(f"Average Forward-Backward: {1e3 * (fwd.sum() + bwd.sum()) / iterations:.4f} ms.")
    log.info(f"Total Time: {1e3 * total:.4f} ms.")
    if as_json:
        it = max(iterations, 1)
        click.echo(json.dumps({
            "forward_ms": 1e3 * fwd.sum() / it, "backward_ms": 1e3 * bwd.sum() / it,
            "forward_backward_ms": 1e3 * (fwd.sum() + bwd.sum()) / it,
            "iterations": iterations,
            "layers": [{"name": net.layer_names[i], "type": net.layers[i].type,
                        "forward_ms": 1e3 * fwd[i] / it, "backward_ms": 1e3 * bwd[i] / it}
                       for i in range(n)]}))


@cli.group()
def data():
    """Prepare data sources (LMDB) from raw datasets."""


@data.command("get")
@click.argument("dataset", type=click.Choice(["mnist"]))
@click.option("--from", "src", type=click.Path(file_okay=False), default=None,
              help="folder holding the official files (train-images-idx3-ubyte[.gz] ...)")
@click.option("--out", default="examples/mnist", show_default=True,
              help="folder for <name>_train_lmdb and <name>_test_lmdb")
@user_errors
def data_get(dataset, src, out):
    """Write Caffe-layout LMDBs of DATASET (keys %08d) from its official files."""
    import os

    from netdef.data.mnist import convert_mnist_folder
    from netdef.errors import ConfigError

    if src is None:
        raise ConfigError(f"downloading {dataset} is not available yet: pass --from DIR with "
                          f"the official files (e.g. --from ../shared/data/mnist)")
    for split in ("train", "test"):
        p = os.path.join(out, f"{dataset}_{split}_lmdb")
        if os.path.exists(p):
            click.echo(f"{p} exists already; remove it to convert again", err=True)
            return
    counts = convert_mnist_folder(src, out)
    click.echo(f"wrote {out}/mnist_train_lmdb ({counts['train']} images) and "
               f"{out}/mnist_test_lmdb ({counts['test']} images)", err=True)


@data.command("compute-mean")
@click.argument("db", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@user_errors
def data_compute_mean(db, out):
    """Per-pixel mean of an LMDB of Datum records, as a .binaryproto (Caffe's
    compute_image_mean)."""
    import numpy as np

    from netdef.data.binaryproto import write_mean
    from netdef.data.lmdb_source import LMDBSource

    src = LMDBSource(db)
    total = None
    remaining = len(src)
    while remaining:
        k = min(1000, remaining)
        for arr, _label in src.read(k):
            total = arr.astype(np.float64) if total is None else total + arr
        remaining -= k
    mean = (total / len(src)).astype(np.float32)
    write_mean(out, mean)
    chans = ", ".join(f"{v:.4f}" for v in mean.reshape(mean.shape[0], -1).mean(axis=1))
    click.echo(f"mean of {len(src)} items of shape {list(mean.shape)} -> {out}; "
               f"per channel: {chans}", err=True)


@data.command("convert-imageset")
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("listfile", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path())
@click.option("--gray", is_flag=True, help="store single-channel images")
@click.option("--shuffle", is_flag=True, help="shuffle the list (seed --seed)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resize-height", type=int, default=0)
@click.option("--resize-width", type=int, default=0)
@user_errors
def data_convert_imageset(root, listfile, out, gray, shuffle, seed, resize_height,
                          resize_width):
    """An LMDB of Datum from a list of "relative/path label" lines under ROOT (Caffe's
    convert_imageset; keys are the 8-digit index, "_" and the path)."""
    import os

    import numpy as np

    from netdef.data.datum import array_to_datum
    from netdef.data.image_list import parse_image_list, read_image
    from netdef.data.lmdb_source import _lmdb
    from netdef.errors import ConfigError

    lines = parse_image_list(listfile)
    if shuffle:
        np.random.default_rng(seed).shuffle(lines)
    if os.path.exists(out) and os.listdir(out):
        raise ConfigError(f"{out} exists and is not empty; remove it first")
    lmdb = _lmdb()
    os.makedirs(out, exist_ok=True)
    env = lmdb.open(out, map_size=1 << 40)
    with env.begin(write=True) as txn:
        for i, (path, label) in enumerate(lines):
            img = read_image(os.path.join(root, path), resize_height, resize_width,
                             is_color=not gray)
            txn.put(f"{i:08d}_{path}".encode(), array_to_datum(img, label).SerializeToString())
    env.close()
    click.echo(f"wrote {len(lines)} images to {out}", err=True)


def main(argv=None):
    cli.main(args=argv, prog_name="netdef")


if __name__ == "__main__":
    main()
