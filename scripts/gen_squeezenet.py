#!/usr/bin/env python
"""Write a squeezenet definition with netdef's NetSpec (netdef/zoo/squeezenet.py): this is
`netdef generate squeezenet` under the script's name; `--help` for options."""
from netdef_cli.generate import script_main

if __name__ == "__main__":
    script_main("squeezenet")
