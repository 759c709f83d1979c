"""``python -m netdef.caffe SCRIPT.py [ARGS...]``: run a pycaffe script unchanged, its
``import caffe`` resolving to netdef.caffe."""
from __future__ import annotations

import runpy
import sys


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m netdef.caffe SCRIPT.py [ARGS...]\n"
              "runs a pycaffe script with 'import caffe' resolving to netdef.caffe")
        return 0 if argv else 2
    from . import install
    install()
    sys.argv = argv
    runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
