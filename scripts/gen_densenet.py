#!/usr/bin/env python
"""Write a densenet definition with netdef's NetSpec (netdef/zoo/densenet.py): this is
`netdef generate densenet` under the script's name; `--help` for options."""
from netdef_cli.generate import script_main

if __name__ == "__main__":
    script_main("densenet")
