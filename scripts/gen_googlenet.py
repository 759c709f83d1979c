#!/usr/bin/env python
"""Write a googlenet definition with netdef's NetSpec (netdef/zoo/googlenet.py): this is
`netdef generate googlenet` under the script's name; `--help` for options."""
from netdef_cli.generate import script_main

if __name__ == "__main__":
    script_main("googlenet")
