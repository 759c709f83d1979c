"""The click group and what every command shares: user errors -> one line and exit status 2,
--input-shape parsing, the phase choice."""

from __future__ import annotations

import functools
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
