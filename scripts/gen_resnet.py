#!/usr/bin/env python
"""Write a resnet definition with netdef's NetSpec (see netdef/zoo/resnet.py); `--help` for options."""
import sys

from netdef.zoo.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("resnet"))
