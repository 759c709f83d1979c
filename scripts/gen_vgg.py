#!/usr/bin/env python
"""Write a vgg definition with netdef's NetSpec (netdef/zoo/vgg.py): this is
`netdef generate vgg` under the script's name; `--help` for options."""
from netdef_cli.generate import script_main

if __name__ == "__main__":
    script_main("vgg")
