#!/usr/bin/env python
"""Write a mobilenet definition with netdef's NetSpec (netdef/zoo/mobilenet.py): this is
`netdef generate mobilenet` under the script's name; `--help` for options."""
from netdef_cli.generate import script_main

if __name__ == "__main__":
    script_main("mobilenet")
