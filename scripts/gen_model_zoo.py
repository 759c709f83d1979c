#!/usr/bin/env python
"""Regenerate model_zoo/<net>/{deploy,train_val,solver}.prototxt for every generated net
(netdef.zoo.MODELS); tests/test_zoo_generators.py checks that the committed files are current.

    python scripts/gen_model_zoo.py [FOLDER ...]
"""
import os
import sys

from netdef.io.files import write_file as write_atomic
from netdef.zoo import MODELS, zoo_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv):
    folders = argv or sorted(MODELS)
    for folder in folders:
        d = os.path.join(ROOT, "model_zoo", folder)
        os.makedirs(d, exist_ok=True)
        for name, text in zoo_files(folder).items():
            write_atomic(os.path.join(d, name), text)
        print(f"model_zoo/{folder}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
