"""The argparse front end shared by scripts/gen_*.py (``netdef generate`` is the click one)."""
from __future__ import annotations

import argparse
import sys

from . import DEFAULT_DATA, FAMILIES, family, net_text, parse_variant, solver_text


def script_main(name: str, argv=None) -> int:
    mod = family(name)
    opt = FAMILIES[name][1]
    p = argparse.ArgumentParser(prog=f"gen_{name}.py",
                                description=f"Write a {name} definition (netdef NetSpec).")
    if opt is not None:
        p.add_argument(f"--{opt}", dest="variant", default=str(mod.VARIANTS[0] if name !=
                                                               "resnet" else 50),
                       choices=[str(v) for v in mod.VARIANTS])
    what = p.add_mutually_exclusive_group()
    what.add_argument("--deploy", dest="kind", action="store_const", const="deploy",
                      help="deploy net: Input layer, softmax output (the default)")
    what.add_argument("--train-val", dest="kind", action="store_const", const="train_val",
                      help="train/val net: LMDB Data layers, loss and top-1/top-5 accuracy")
    what.add_argument("--solver", dest="kind", action="store_const", const="solver",
                      help="the authors' solver settings")
    p.add_argument("--data", default=DEFAULT_DATA,
                   help="folder holding ilsvrc12_train_lmdb and ilsvrc12_val_lmdb "
                        f"(default {DEFAULT_DATA})")
    p.add_argument("--net", default="train_val.prototxt",
                   help="with --solver: the train_val file the solver names")
    p.add_argument("--format", choices=("prototxt", "yaml"), default="prototxt")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    a = p.parse_args(argv)
    variant = parse_variant(name, getattr(a, "variant", None))
    kind = a.kind or "deploy"
    if kind == "solver":
        prefix = a.net.rsplit(".", 1)[0].replace("train_val", "snapshot")
        text = solver_text(name, variant, net=a.net, snapshot_prefix=prefix, fmt=a.format)
    else:
        text = net_text(name, variant, deploy=(kind == "deploy"), data_dir=a.data,
                        fmt=a.format)
    if a.output:
        from ..io.files import write_file as write_atomic
        write_atomic(a.output, text)
    else:
        sys.stdout.write(text)
    return 0
