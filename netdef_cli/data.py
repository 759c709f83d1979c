"""`netdef data ...`: datasets and Caffe's data tools (get, compute-mean, convert-imageset,
siamese-pairs)."""
from __future__ import annotations

import click

from .app import cli, user_errors


@cli.group()
def data():
    """Prepare data sources (LMDB) from raw datasets."""


@data.command("get")
@click.argument("dataset", type=click.Choice(["mnist", "fashion-mnist", "cifar10"]))
@click.option("--from", "src", type=click.Path(), default=None,
              help="folder holding the official files (MNIST-style: train-images-idx3-ubyte"
                   "[.gz] ...; CIFAR-10: cifar-10-binary.tar.gz or cifar-10-batches-bin/)")
@click.option("--out", default=None,
              help="folder for <name>_train_lmdb and <name>_test_lmdb  [default: "
                   "examples/mnist, examples/fashion_mnist, examples/cifar10]")
@click.option("--no-verify", is_flag=True, help="skip the MD5 check of the official files")
@user_errors
def data_get(dataset, src, out, no_verify):
    """Write Caffe-layout LMDBs of DATASET from its official files.

    The files come from --from DIR, else from a system copy (Debian's
    /usr/share/datasets/...), else from the canonical mirrors (checked against the published
    MD5); Fashion-MNIST falls back to the Debian package dataset-fashion-mnist.  CIFAR-10
    also gets mean.binaryproto (Caffe's create_cifar10.sh)."""
    import os

    from netdef.data.datasets import DATASETS, get_dataset, lmdb_paths

    ds = DATASETS[dataset]
    out = out or ds.default_out
    paths = lmdb_paths(ds, out)
    if all(os.path.exists(p) for p in paths.values()):
        click.echo(f"{paths['train']} and {paths['test']} exist already; remove them to "
                   f"convert again", err=True)
        return
    counts = get_dataset(dataset, out, src, check=not no_verify,
                         log=lambda m: click.echo(m, err=True))
    extra = f" and {out}/mean.binaryproto" if ds.kind == "cifar10" else ""
    click.echo(f"wrote {paths['train']} ({counts['train']} images), {paths['test']} "
               f"({counts['test']} images){extra}", err=True)


@data.command("compute-mean")
@click.argument("db", type=click.Path(file_okay=False))
@click.argument("out", type=click.Path(dir_okay=False))
@user_errors
def data_compute_mean(db, out):
    """Per-pixel mean of an LMDB of Datum records, as a .binaryproto (Caffe's
    compute_image_mean)."""
    import numpy as np

    from netdef.data.binaryproto import write_mean
    from netdef.data.lmdb_source import image_mean

    mean, n = image_mean(db)
    mean = mean.astype(np.float32)
    write_mean(out, mean)
    chans = ", ".join(f"{v:.4f}" for v in mean.reshape(mean.shape[0], -1).mean(axis=1))
    click.echo(f"mean of {n} items of shape {list(mean.shape)} -> {out}; "
               f"per channel: {chans}", err=True)


_ENCODINGS = {"jpg": "jpg", "jpeg": "jpg", "png": "png", "bmp": "bmp"}


@data.command("convert-imageset")
@click.argument("root", type=click.Path(file_okay=False))
@click.argument("listfile", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path())
@click.option("--gray", is_flag=True, help="store single-channel images")
@click.option("--shuffle", is_flag=True, help="shuffle the list (seed --seed)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resize-height", type=int, default=0)
@click.option("--resize-width", type=int, default=0)
@click.option("--encoded", is_flag=True,
              help="store compressed images (a file already in the format is stored as it is)")
@click.option("--encode-type", type=click.Choice(["jpg", "png", "bmp"]), default=None,
              help="with --encoded: the format (default: each file's own)")
@click.option("--check-size", is_flag=True, help="require every image to have the same size")
@click.option("--backend", type=click.Choice(["lmdb", "leveldb"]), default="lmdb",
              show_default=True)
@user_errors
def data_convert_imageset(root, listfile, out, gray, shuffle, seed, resize_height,
                          resize_width, encoded, encode_type, check_size, backend):
    """An LMDB of Datum from a list of "relative/path label" lines under ROOT (Caffe's
    convert_imageset; keys are the 8-digit index, "_" and the path)."""
    import os

    import numpy as np

    from netdef.data.datum import array_to_datum, open_image
    from netdef.data.image_list import parse_image_list, read_image
    from netdef.data.lmdb_source import write_lmdb
    from netdef.errors import ConfigError, FileFormatError
    from netdef.proto import pb

    if backend == "leveldb":
        raise ConfigError("netdef writes LMDB only (--backend lmdb): Caffe's Data layer reads "
                          "both, and netdef's Data layer reads LMDB (convert a LevelDB by "
                          "reading it with plyvel and writing its Datum records with "
                          "netdef.data.lmdb_source.write_lmdb)")
    if encode_type and not encoded:
        raise ConfigError("--encode-type needs --encoded")
    lines = parse_image_list(listfile)
    if shuffle:
        np.random.default_rng(seed).shuffle(lines)
    if os.path.exists(out) and os.listdir(out):
        raise ConfigError(f"{out} exists and is not empty; remove it first")
    resize = resize_height > 0 and resize_width > 0
    first_size = []

    def check(path, size):
        if not check_size:
            return
        if not first_size:
            first_size.append(size)
        elif size != first_size[0]:
            raise FileFormatError(f"the image is {size[1]}x{size[2]} with {size[0]} channels, "
                                  f"the first one {first_size[0][1]}x{first_size[0][2]} with "
                                  f"{first_size[0][0]} (--check-size)", file=path)

    def datum(path, label):
        full = os.path.join(root, path)
        ext = _ENCODINGS.get(os.path.splitext(path)[1].lstrip(".").lower())
        if encoded and not resize and ext is not None and ext == (encode_type or ext):
            # Caffe's ReadFileToDatum: the file's own bytes when they are already in the
            # wanted format and channel count
            with open_image(full) as img:
                channels = 1 if img.mode in ("L", "1", "I", "I;16", "F") else 3
                size = (channels, img.height, img.width)
            if channels == (1 if gray else 3):
                check(full, size)
                with open(full, "rb") as f:
                    return pb.Datum(data=f.read(), encoded=True, label=int(label))
        arr = read_image(full, resize_height, resize_width, is_color=not gray)
        check(full, arr.shape)
        if encoded:
            return array_to_datum(arr, label, encode=encode_type or ext or "png")
        return array_to_datum(arr, label)

    # a commit every 1000 images and a map that grows as needed (not one transaction over a
    # 1 TiB map, which an address-space limit refuses), built beside OUT and moved in
    records = (datum(path, label) for path, label in lines)
    write_lmdb(out, records, keys=(f"{i:08d}_{path}".encode()
                                   for i, (path, _) in enumerate(lines)))
    click.echo(f"wrote {len(lines)} images to {out}", err=True)


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
