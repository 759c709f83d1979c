"""`netdef data siamese-pairs`: the pair LMDBs of Caffe's siamese example
(create_mnist_siamese.sh / convert_mnist_siamese_data)."""
from __future__ import annotations

import click

from .app import user_errors
from .data import data


@data.command("siamese-pairs")
@click.option("--from", "src", type=click.Path(file_okay=False), required=True,
              help="folder holding the MNIST IDX files (train-images-idx3-ubyte[.gz] ...)")
@click.option("--out", default="examples/siamese", show_default=True,
              help="folder for mnist_siamese_train_lmdb and mnist_siamese_test_lmdb")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the random pairing (the test pairs use seed+1)")
@user_errors
def data_siamese_pairs(src, out, seed):
    """Random MNIST image pairs as 2-channel Datum records, label 1 when both images show the
    same digit (Caffe's convert_mnist_siamese_data), one pair per image."""
    import os

    from netdef.data.siamese import convert_mnist_siamese_folder

    paths = [os.path.join(out, f"mnist_siamese_{s}_lmdb") for s in ("train", "test")]
    if all(os.path.exists(p) for p in paths):
        click.echo(f"{paths[0]} and {paths[1]} exist already; remove them to convert again",
                   err=True)
        return
    counts = convert_mnist_siamese_folder(src, out, seed=seed)
    click.echo(f"wrote {paths[0]} ({counts['train']} pairs), {paths[1]} "
               f"({counts['test']} pairs)", err=True)
