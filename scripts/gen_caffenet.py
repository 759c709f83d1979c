#!/usr/bin/env python
"""Write a caffenet definition with netdef's NetSpec (netdef/zoo/alexnet.py): this is
`netdef generate caffenet` under the script's name; `--help` for options."""
from netdef_cli.generate import script_main

if __name__ == "__main__":
    script_main("caffenet")
