#!/usr/bin/env python
"""Write a mobilenet definition with netdef's NetSpec (see netdef/zoo/mobilenet.py); `--help` for options."""
import sys

from netdef.zoo.cli import script_main

if __name__ == "__main__":
    sys.exit(script_main("mobilenet"))
