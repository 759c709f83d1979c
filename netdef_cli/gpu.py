"""GPU commands: device-query, check-parity (netdef.backend.cuda)."""
from __future__ import annotations

import json

import click

from .app import cli, parse_input_shapes, user_errors


@cli.command("device-query")
@click.option("--gpu", default="0", show_default=True, help="CUDA device id")
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@user_errors
def device_query(gpu, as_json):
    """Print a CUDA device's properties (Caffe's device_query)."""
    from netdef.backend.cuda.device import device_query as query
    from netdef.errors import ConfigError
    try:
        gid = int(gpu)
    except ValueError:
        raise ConfigError(f"--gpu {gpu}: give a device number (e.g. 0)") from None
    props = query(gid)
    if as_json:
        click.echo(json.dumps(props))
        return
    for k, v in props.items():
        click.echo(f"{k:>28}: {v}")


@cli.command("check-parity")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--weights", default="", help=".caffemodel file(s) (a,b)")
@click.option("--tol", type=float, default=1e-4, show_default=True,
              help="largest relative difference allowed (max|cpu-gpu| / max|cpu|)")
@click.option("--input-shape", "input_shapes", multiple=True, callback=parse_input_shapes,
              metavar="BLOB=N,C,H,W", help="shape of a data top (repeatable)")
@click.option("--gpu", default="0", show_default=True, help="CUDA device id")
@click.option("--phase", type=click.Choice(["TRAIN", "TEST"], case_sensitive=False),
              default="TRAIN", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object")
@user_errors
def check_parity(model, weights, tol, input_shapes, gpu, phase, dtype, seed, as_json):
    """One forward/backward of MODEL on the CPU and on the GPU: the largest relative
    difference per blob (data and diff, parameters included); exit 1 above --tol."""
    import numpy as np

    from netdef.backend.cuda.device import select_device
    from netdef.backend.cuda.parity import run_parity
    from netdef.config.loader import load_net
    from netdef.io.weights import load_weights
    from netdef.net import PHASES, Net

    gid = int(gpu)
    select_device(gid)
    d = load_net(model)

    def make():
        net = Net(d, PHASES[phase.upper()], dtype=np.dtype(dtype), input_shapes=input_shapes,
                  seed=seed)
        if weights:
            load_weights(net, weights)
        return net

    results = run_parity(make, gid, seed)
    worst = max((v for _, v in results), default=0.0)
    bad = [(n, v) for n, v in results if not v <= tol]
    if as_json:
        click.echo(json.dumps({"tol": tol, "max": worst, "ok": not bad,
                               "blobs": {n: v for n, v in results}}))
    else:
        for n, v in results:
            flag = "  FAIL" if not v <= tol else ""
            click.echo(f"{n:>40}  {v:.3e}{flag}")
        click.echo(f"largest relative difference {worst:.3e} (tol {tol:g}): "
                   f"{'FAIL' if bad else 'OK'}")
    if bad:
        raise SystemExit(1)
