"""Reading and writing definitions: prototxt and YAML with positions, legacy upgrade."""
from .loader import (Definition, file_format, load_message, load_net, load_solver,
                     net_from_text, parse_text)
from .writer import to_dict, to_prototxt, to_text, to_yaml

__all__ = ["Definition", "file_format", "load_message", "load_net", "load_solver",
           "net_from_text", "parse_text", "to_dict", "to_prototxt", "to_text", "to_yaml"]
