"""The `netdef` command line: parse flags, call the library, format the output.

User errors (:class:`netdef.errors.NetdefError`) print one line and exit with status 2;
anything else is a bug and keeps its traceback.  Caffe's spellings (``-solver X``,
``device_query``) are accepted as they are (:func:`caffe_spelling`).  Commands live in ``defs`` (summary, convert,
upgrade, layers), ``run`` (train, test, time), ``plot`` and ``data``.
"""
from __future__ import annotations

from . import data, defs, plot, run  # noqa: F401  (register the commands)
from . import deploy  # noqa: F401  (freeze, predict, export)
from . import generate  # noqa: F401  (netdef generate: netdef.zoo's NetSpec nets)
from . import gpu  # noqa: F401  (device-query, check-parity: the CUDA backend)
from . import draw  # noqa: F401  (netdef draw: draw_net.py's picture)
from . import features  # noqa: F401  (netdef extract-features)
from . import caffe_tools  # noqa: F401  (netdef caffe TOOL: Caffe's own argument forms)
from .app import EXIT_USER_ERROR, cli, parse_input_shapes, user_errors  # noqa: F401


import re
import sys

_CAFFE_FLAG = re.compile(r"^--?([a-z][a-z0-9]*(?:_[a-z0-9]+)*[a-z0-9])(=.*)?$", re.S)


def caffe_spelling(argv: list[str]) -> list[str]:
    """Caffe's command lines as netdef's: gflags' single-dash long flags (``-solver X``,
    ``-weights=W``), underscores in flag and command names (``-sigint_effect``,
    ``device_query``). Single-letter flags (``-o``), values and everything after ``--`` are
    left alone."""
    out, rest = [], False
    for i, a in enumerate(argv):
        if rest or a == "--":
            rest = True
            out.append(a)
            continue
        if i == 0 and not a.startswith("-"):
            out.append(a.replace("_", "-"))
            continue
        m = _CAFFE_FLAG.match(a)
        if m and len(m.group(1)) > 1 and a.startswith("-"):
            out.append("--" + m.group(1).replace("_", "-") + (m.group(2) or ""))
        else:
            out.append(a)
    return out


def main(argv=None):
    from . import app
    argv = list(sys.argv[1:] if argv is None else argv)
    app.ARGV = caffe_spelling(argv)
    cli.main(args=app.ARGV, prog_name="netdef")


if __name__ == "__main__":
    main()
