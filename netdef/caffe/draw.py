"""``caffe.draw``: pictures of a ``NetParameter`` (:mod:`netdef.draw`; DOT text always, images
through graphviz's ``dot``, ``get_pydot_graph`` with pydot)."""
from __future__ import annotations

from ..draw import (BLOB_COLOR, LAYER_COLORS, choose_color_by_layertype,  # noqa: F401
                    draw_net, draw_net_to_file, get_edge_label, get_layer_label,
                    get_pydot_graph, to_dot)

__all__ = ["get_pydot_graph", "draw_net", "draw_net_to_file", "get_layer_label",
           "get_edge_label", "choose_color_by_layertype", "to_dot"]
