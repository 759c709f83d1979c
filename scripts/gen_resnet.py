#!/usr/bin/env python
"""Write a resnet definition with netdef's NetSpec (netdef/zoo/resnet.py): this is
`netdef generate resnet` under the script's name; `--help` for options."""
from netdef_cli.generate import script_main

if __name__ == "__main__":
    script_main("resnet")
