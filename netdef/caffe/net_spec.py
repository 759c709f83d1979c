"""``caffe.net_spec``: netdef's NetSpec (:mod:`netdef.netspec`) under pycaffe's names.

As in pycaffe, a top that was never assigned to the NetSpec is named after its layer type
(``InnerProduct1``); netdef's own :class:`netdef.netspec.NetSpec` reports it as an error."""
from netdef.netspec import Function, Top, layers, params, to_proto  # noqa: F401
from netdef.netspec import NetSpec as _NetSpec


class NetSpec(_NetSpec):
    autoname = True


__all__ = ["Function", "NetSpec", "Top", "layers", "params", "to_proto"]
