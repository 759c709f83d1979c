"""``netdef generate NAME``: write a model-zoo net (deploy, train_val or solver) made by the
NetSpec generators of :mod:`netdef.zoo` (the same as scripts/gen_*.py)."""
from __future__ import annotations

import re

import click

from netdef.errors import ConfigError

from .app import cli, user_errors


def _resolve(name: str, variant):
    from netdef import zoo
    low = name.lower().replace("-", "_")
    if low in zoo.FAMILIES:
        fam = low
    else:
        m = re.fullmatch(r"([a-z]+?)_?v?(\d+(?:\.\d+)?)", low)
        if m is None or m.group(1) not in zoo.FAMILIES:
            raise ConfigError(f"unknown net '{name}': one of {', '.join(zoo.FAMILIES)} "
                              f"(e.g. resnet --depth 50, or resnet50, squeezenet_v1.1)")
        fam = m.group(1)
        if variant is not None and str(variant) != m.group(2):
            raise ConfigError(f"'{name}' names variant {m.group(2)} but --variant says "
                              f"{variant}")
        variant = m.group(2)
    try:
        return fam, zoo.parse_variant(fam, variant)
    except ValueError as e:
        raise ConfigError(str(e)) from None


@cli.command()
@click.argument("name")
@click.option("--variant", "--depth", "--version", "variant", default=None,
              help="depth (resnet 18/34/50/101/152, vgg 16/19, densenet 121/161/169/201) or "
                   "version (squeezenet 1.0/1.1, mobilenet 1/2)")
@click.option("--deploy", "kind", flag_value="deploy", default=True,
              help="deploy net: Input layer and softmax (the default)")
@click.option("--train-val", "kind", flag_value="train_val",
              help="train/val net: LMDB Data layers, loss, top-1/top-5 accuracy")
@click.option("--solver", "kind", flag_value="solver", help="the authors' solver settings")
@click.option("--data", default=None, metavar="DIR",
              help="folder of ilsvrc12_train_lmdb / ilsvrc12_val_lmdb (default examples/imagenet)")
@click.option("--net", "net_path", default="train_val.prototxt", show_default=True,
              help="with --solver: the net file the solver names")
@click.option("--format", "fmt", type=click.Choice(["prototxt", "yaml"]), default=None,
              help="output syntax (default: from -o's extension, else prototxt)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="file to write (default: standard output)")
@user_errors
def generate(name, variant, kind, data, net_path, fmt, output):
    """Write NAME's definition: resnet, vgg, googlenet, squeezenet, mobilenet, densenet,
    alexnet, caffenet
    (a variant may be glued on: resnet152, vgg_19, squeezenet_v1.1)."""
    from netdef import zoo
    from netdef.io.files import write_file as write_atomic
    fam, variant = _resolve(name, variant)
    if fmt is None:
        fmt = "yaml" if output and output.lower().endswith((".yaml", ".yml")) else "prototxt"
    if kind == "solver":
        prefix = net_path.rsplit(".", 1)[0].replace("train_val", "snapshot")
        text = zoo.solver_text(fam, variant, net=net_path, snapshot_prefix=prefix, fmt=fmt)
    else:
        text = zoo.net_text(fam, variant, deploy=(kind != "train_val"),
                            data_dir=data or zoo.DEFAULT_DATA, fmt=fmt)
    if output:
        write_atomic(output, text)
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


def script_main(family: str, argv=None):
    """``scripts/gen_<family>.py [OPTIONS]``: ``netdef generate FAMILY [OPTIONS]`` under the
    script's name (exits with the command's status)."""
    import sys
    args = sys.argv[1:] if argv is None else list(argv)
    generate.main([family, *args], prog_name=f"gen_{family}.py",
                  help_option_names=["-h", "--help"])
