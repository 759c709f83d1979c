"""The click group and what every command shares: user errors -> one line and exit status 2,
--input-shape parsing, the phase choice."""

from __future__ import annotations

import functools
import sys

import click

from netdef import __version__
from netdef.errors import NetdefError

EXIT_USER_ERROR = 2
#: the command line as netdef_cli.main.main parsed it (commands that start themselves again
#: under mpiexec need it); None when the commands are invoked in-process
ARGV: list[str] | None = None


def user_errors(fn):
    """Turn NetdefError into a one-line message and exit status 2."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except NetdefError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(EXIT_USER_ERROR)
        except MemoryError:
            click.echo("error: out of memory (the net, its data or a file needs more than "
                       "this process can allocate: lower the batch size)", err=True)
            sys.exit(EXIT_USER_ERROR)
    return wrapper


def python_layers_option(runs_by_default: bool):
    """The switch for Python layers (user code from the model's folder). Commands that run the
    net import them, as Caffe does, unless ``--no-python-layers``; commands that only read a
    definition (summary) import nothing unless ``--allow-python-layers``."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, python_layers_flag=False, **kwargs):
            from netdef.layers.python_layer import REFUSE, RUN, SKIP, python_layers_mode
            if runs_by_default:
                mode = REFUSE if python_layers_flag else RUN
                hint = "drop --no-python-layers to run them"
            else:
                mode, hint = (RUN if python_layers_flag else SKIP), None
            with python_layers_mode(mode, hint):
                return fn(*args, **kwargs)
        if runs_by_default:
            return click.option("--no-python-layers", "python_layers_flag", is_flag=True,
                                help="refuse a net with Python layers instead of importing "
                                     "their modules")(wrapper)
        return click.option("--allow-python-layers", "python_layers_flag", is_flag=True,
                            help="import Python layers' modules to infer their shapes (runs "
                                 "their setup and reshape)")(wrapper)
    return deco


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
