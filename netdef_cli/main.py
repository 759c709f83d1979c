"""The `netdef` command line: parse flags, call the library, format the output.

User errors (:class:`netdef.errors.NetdefError`) print one line and exit with status 2;
anything else is a bug and keeps its traceback.  Commands live in ``defs`` (summary, convert,
upgrade, layers), ``run`` (train, test, time), ``plot`` and ``data``.
"""
from __future__ import annotations

from . import data, defs, plot, run  # noqa: F401  (register the commands)
from . import deploy  # noqa: F401  (freeze, predict, export)
from . import generate  # noqa: F401  (netdef generate: netdef.zoo's NetSpec nets)
from . import gpu  # noqa: F401  (device-query, check-parity: the CUDA backend)
from .app import EXIT_USER_ERROR, cli, parse_input_shapes, user_errors  # noqa: F401


def main(argv=None):
    cli.main(args=argv, prog_name="netdef")


if __name__ == "__main__":
    main()
