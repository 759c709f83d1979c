#!/usr/bin/env python
"""Write an alexnet definition with netdef's NetSpec (netdef/zoo/alexnet.py): this is
`netdef generate alexnet` under the script's name; `--help` for options."""
from netdef_cli.generate import script_main

if __name__ == "__main__":
    script_main("alexnet")
