"""`netdef data ...`: datasets and Caffe's data tools."""
from __future__ import annotations

import click

from .app import cli, user_errors


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
