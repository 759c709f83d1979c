"""`netdef extract-features`: Caffe's extract_features tool (netdef.features)."""
from __future__ import annotations

from contextlib import nullcontext

import click

from .app import PHASE, cli, parse_input_shapes, python_layers_option, user_errors
from .progress import for_command
from .run import progress_option


@cli.command("extract-features")
@click.option("--model", required=True, type=click.Path(dir_okay=False),
              help="the net (its data layers give the items)")
@click.option("--weights", default="", help=".caffemodel file(s) (a,b)")
@click.option("--blobs", required=True, help="blob names, comma separated (e.g. fc7,pool5)")
@click.option("--iterations", type=click.IntRange(min=1), required=True,
              help="number of batches")
@click.option("--out", required=True, type=click.Path(),
              help="folder of the LMDBs / .npy files, or the .h5 file (--format hdf5)")
@click.option("--format", "fmt", type=click.Choice(["lmdb", "hdf5", "npy"]), default="lmdb",
              show_default=True)
@click.option("--phase", type=PHASE, default="TEST", show_default=True)
@click.option("--gpu", default=None, help="CUDA device id")
@click.option("--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
              metavar="BLOB=N,C,H,W")
@progress_option
@python_layers_option(runs_by_default=True)
@user_errors
def extract_features_cmd(model, weights, blobs, iterations, out, fmt, phase, gpu,
                         input_shapes, progress):
    """Write the values of blobs for every item of N batches (Caffe's extract_features:
    one Datum LMDB per blob, keys 0000000000, 0000000001...; or HDF5, or .npy)."""
    import logging

    from netdef.features import extract_features
    from netdef.net import PHASES
    from netdef_cli.logfmt import setup_logging
    from netdef_cli.run import _check_gpu, _model_net

    setup_logging()
    log = logging.getLogger("netdef.features")
    names = [b.strip() for b in blobs.split(",") if b.strip()]
    gid = _check_gpu(gpu)
    net = _model_net(model, weights, PHASES[phase.upper()], None, (), input_shapes, "float32")
    if gid is not None:
        net.to_device(gid)
    with for_command(progress, iterations, label="batch") or nullcontext() as bar:
        paths = extract_features(net, names, iterations, out, fmt,
                                 on_batch=(lambda k: bar.update(k)) if bar else None)
    for p in paths:
        log.info(f"Wrote {p}")
    click.echo(f"wrote {', '.join(paths)}")
