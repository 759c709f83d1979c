"""NetSpec: write a net in Python, in the spirit of pycaffe's ``caffe.net_spec``.

::

    from netdef.netspec import NetSpec, layers as L, params as P

    n = NetSpec(name="tiny")
    n.data = L.Input(input_param=dict(shape=dict(dim=[1, 3, 224, 224])))
    n.conv1 = L.Convolution(n.data, num_output=64, kernel_size=7, stride=2, pad=3,
                            weight_filler=dict(type="msra"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    print(n.to_prototxt())

Semantics follow pycaffe: ``L.<Type>(*bottoms, **kwargs)`` makes one layer; a keyword that is
not a LayerParameter field goes to the type's own parameter message
(``convolution_param`` ...); keywords ending in ``_param`` are LayerParameter fields; dicts are
messages, lists are repeated fields (a scalar is accepted for a repeated field); ``ntop`` sets
the number of tops, ``in_place=True`` writes the tops over the bottoms, ``name=`` overrides the
layer name.  A top is named by the NetSpec attribute (or item: ``n["conv1/7x7_s2"] = ...``) it
is assigned to, and a layer is named after its first top (an in-place layer after the attribute
it is assigned to, as in pycaffe).

Unlike pycaffe, every keyword is checked against the schema *when the call is made*: an unknown
field (with a "did you mean"), a value of the wrong type, a bad enum value raise
:class:`netdef.errors.ConfigError` naming the field and the file:line of the call in the
user's script.  A layer whose bottom was never assigned to the NetSpec is reported by
``to_proto()`` at the line that made the consuming layer.
"""
from __future__ import annotations

import difflib
import numbers
import os
import sys
from collections import OrderedDict

from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message import Message as _PbMessage

from .errors import ConfigError
from .proto import pb

__all__ = ["Function", "NetSpec", "Top", "layers", "params", "to_proto"]

_THIS_FILE = os.path.normcase(os.path.abspath(__file__))
_LAYER_FIELDS = pb.LayerParameter.DESCRIPTOR.fields_by_name

#: Caffe layer types that netdef does not implement (yet) but a definition may name; their
#: parameter message, where they have one
_OTHER_TYPES = {
    "Python": "python_param", "Recurrent": "recurrent_param", "RNN": "recurrent_param",
    "LSTM": "recurrent_param", "HDF5Output": "hdf5_output_param", "SPP": "spp_param",
    "Parameter": "parameter_param", "BatchReindex": None, "Filter": None,
}

_INT_RANGES = {
    FD.TYPE_INT32: (-2**31, 2**31 - 1), FD.TYPE_SINT32: (-2**31, 2**31 - 1),
    FD.TYPE_SFIXED32: (-2**31, 2**31 - 1), FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1), FD.TYPE_INT64: (-2**63, 2**63 - 1),
    FD.TYPE_SINT64: (-2**63, 2**63 - 1), FD.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_FIXED64: (0, 2**64 - 1),
}
_FLOATS = (FD.TYPE_FLOAT, FD.TYPE_DOUBLE)


# -- where the user's call is ----------------------------------------------------------------
def _caller() -> tuple[str | None, int | None]:
    """(file, line) of the first frame outside this module: the user's call."""
    f = sys._getframe(1)
    while f is not None and os.path.normcase(os.path.abspath(f.f_code.co_filename)) == _THIS_FILE:
        f = f.f_back
    if f is None:  # pragma: no cover - always called from somewhere
        return None, None
    return f.f_code.co_filename, f.f_lineno


def _error(msg: str, where=None, **kw) -> ConfigError:
    file, line = where if where is not None else _caller()
    return ConfigError(msg, file=file, line=line, **kw)


# -- layer types and their parameter messages ------------------------------------------------
_type_cache: dict[str, str | None] = {}


def _known_types() -> list[str]:
    from .layers.registry import layer_types
    return sorted(set(layer_types()) | set(_OTHER_TYPES))


def _param_field(type_name: str, where) -> str | None:
    """The LayerParameter field holding ``type_name``'s parameters (None: it has none)."""
    if type_name in _type_cache:
        return _type_cache[type_name]
    from .layers.registry import get_layer_class, param_field
    if get_layer_class(type_name) is not None:
        field = param_field(type_name)
    elif type_name in _OTHER_TYPES:
        field = _OTHER_TYPES[type_name]
    else:
        close = difflib.get_close_matches(type_name, _known_types(), n=1, cutoff=0.5)
        hint = f" (did you mean L.{close[0]}?)" if close else ""
        raise _error(f"unknown layer type '{type_name}'{hint}", where)
    if field is not None and field not in _LAYER_FIELDS:  # pragma: no cover - registry bug
        field = None
    _type_cache[type_name] = field
    return field


# -- assigning Python values to protobuf fields, with checks ---------------------------------
def _type_word(fd) -> str:
    if fd.type == FD.TYPE_ENUM:
        names = ", ".join(v.name for v in fd.enum_type.values)
        return f"one of {names}"
    if fd.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP):
        return f"a {fd.message_type.name} (a dict)"
    if fd.type == FD.TYPE_BOOL:
        return "a bool"
    if fd.type in _FLOATS:
        return "a number"
    if fd.type in (FD.TYPE_STRING, FD.TYPE_BYTES):
        return "a string"
    return "an integer"


def _scalar(fd, value, path: str, where):
    def bad(extra: str = ""):
        return _error(f"'{path}' expects {_type_word(fd)}, got {value!r}{extra}", where,
                      field=path)

    t = fd.type
    if t == FD.TYPE_BOOL:
        if isinstance(value, bool) or type(value).__name__ == "bool_":
            return bool(value)
        raise bad()
    if t in _INT_RANGES:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise bad()
        lo, hi = _INT_RANGES[t]
        if not lo <= int(value) <= hi:
            raise bad(f" (out of range {lo}..{hi})")
        return int(value)
    if t in _FLOATS:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise bad()
        return float(value)
    if t == FD.TYPE_STRING:
        if not isinstance(value, str):
            raise bad()
        return value
    if t == FD.TYPE_BYTES:
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, bytes):
            return value
        raise bad()
    if t == FD.TYPE_ENUM:
        et = fd.enum_type
        if isinstance(value, str):
            ev = et.values_by_name.get(value)
            if ev is None:
                close = difflib.get_close_matches(value, list(et.values_by_name), n=1, cutoff=0.5)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise bad(hint)
            return ev.number
        if isinstance(value, numbers.Integral) and not isinstance(value, bool) \
                and int(value) in et.values_by_number:
            return int(value)
        raise bad()
    raise bad()  # pragma: no cover


def _unknown(key: str, descs, path_prefix: str, where, extra: str = "",
             lead: str = "") -> ConfigError:
    names: list[str] = []
    for d in descs:
        names.extend(d.fields_by_name)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    owners = " or ".join(d.name for d in descs)
    return _error(f"{lead}unknown field '{path_prefix}{key}' in {owners}{hint}{extra}", where,
                  field=path_prefix + key)


def _fill(msg, values: dict, path: str, where) -> None:
    desc = msg.DESCRIPTOR
    for key, value in values.items():
        if not isinstance(key, str):
            raise _error(f"field names must be strings, got {key!r} in '{path or desc.name}'",
                         where)
        fd = desc.fields_by_name.get(key)
        if fd is None:
            raise _unknown(key, [desc], f"{path}." if path else "", where)
        _assign(msg, fd, value, f"{path}.{key}" if path else key, where)


def _assign(msg, fd, value, path: str, where) -> None:
    is_msg = fd.type in (FD.TYPE_MESSAGE, FD.TYPE_GROUP)
    if fd.is_repeated:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        target = getattr(msg, fd.name)
        for i, item in enumerate(items):
            ipath = f"{path}[{i}]" if len(items) > 1 or isinstance(value, (list, tuple)) \
                else path
            if is_msg:
                _message_value(target.add(), fd, item, ipath, where)
            else:
                target.append(_scalar(fd, item, ipath, where))
        return
    if isinstance(value, (list, tuple)):
        raise _error(f"'{path}' takes one value, got a list of {len(value)}", where, field=path)
    if is_msg:
        _message_value(getattr(msg, fd.name), fd, value, path, where)
    else:
        setattr(msg, fd.name, _scalar(fd, value, path, where))


def _message_value(sub, fd, value, path: str, where) -> None:
    if isinstance(value, dict):
        sub.SetInParent()
        _fill(sub, value, path, where)
    elif isinstance(value, _PbMessage) and value.DESCRIPTOR is fd.message_type:
        sub.CopyFrom(value)
    else:
        raise _error(f"'{path}' expects {_type_word(fd)}, got {value!r}", where, field=path)


# -- the graph --------------------------------------------------------------------------------
class Top:
    """One output of a layer call; assign it to a NetSpec to name it."""
    __slots__ = ("fn", "n")

    def __init__(self, fn: Function, n: int):
        self.fn = fn
        self.n = n

    def __repr__(self):
        return f"<Top {self.n} of L.{self.fn.type_name} at {self.fn.where_str()}>"

    def to_proto(self) -> pb.NetParameter:
        """The net made of this top and everything it depends on (pycaffe's Top.to_proto);
        tops are named as in a NetSpec only where they were assigned to one."""
        return to_proto(self)


class Function:
    """One layer call: its type, bottoms and (already validated) parameters."""

    def __init__(self, type_name: str, inputs: tuple, kwargs: dict, where):
        self.type_name = type_name
        self.where = where
        self.ntop = kwargs.pop("ntop", 1)
        if isinstance(self.ntop, bool) or not isinstance(self.ntop, numbers.Integral) \
                or self.ntop < 0:
            raise _error(f"L.{type_name}: ntop must be a non-negative integer, got "
                         f"{self.ntop!r}", where, field="ntop")
        self.in_place = kwargs.pop("in_place", False)
        if not isinstance(self.in_place, bool):
            raise _error(f"L.{type_name}: in_place must be True or False, got "
                         f"{self.in_place!r}", where, field="in_place")
        for i, b in enumerate(inputs):
            if not isinstance(b, Top):
                what = (f"a tuple of {len(b)} tops (pick one of them)" if isinstance(b, tuple)
                        else repr(b))
                raise _error(f"L.{type_name}: bottom {i} must be a top (a value returned by a "
                             f"layer call or read from the NetSpec), got {what}", where,
                             field="bottom")
        self.inputs = tuple(inputs)
        if self.in_place and self.ntop != len(self.inputs):
            raise _error(f"L.{type_name}: in_place=True needs as many tops as bottoms "
                         f"({len(self.inputs)} bottoms, ntop={self.ntop})", where,
                         field="in_place")
        for key in ("top", "bottom"):
            if key in kwargs:
                raise _error(f"L.{type_name}: '{key}' is not a keyword argument here: "
                             f"bottoms are the positional arguments and tops are named by "
                             f"assigning the result to the NetSpec", where, field=key)
        self.explicit_name = kwargs.pop("name", None)
        if self.explicit_name is not None and not isinstance(self.explicit_name, str):
            raise _error(f"L.{type_name}: name must be a string, got {self.explicit_name!r}",
                         where, field="name")
        if "type" in kwargs:
            raise _error(f"L.{type_name}: 'type' is given by the call (L.{type_name}); "
                         f"do not pass it", where, field="type")
        self.proto = pb.LayerParameter(type=type_name)
        try:
            self._apply(kwargs)
        except ConfigError as e:  # say which call it was
            if not e.message.startswith("L."):
                e.message = f"L.{type_name}: {e.message}"
                e.args = (e.message,)
            raise
        self.tops = tuple(Top(self, i) for i in range(self.ntop))

    def where_str(self) -> str:
        file, line = self.where
        return f"{file}:{line}"

    def _apply(self, kwargs: dict) -> None:
        where = self.where
        pfield = _param_field(self.type_name, where)
        psub = getattr(self.proto, pfield) if pfield else None
        for key, value in kwargs.items():
            # pycaffe: "*_param" keywords are LayerParameter fields; others go to the type's
            # own parameters first, then to the LayerParameter
            if not key.endswith("_param") and psub is not None:
                fd = psub.DESCRIPTOR.fields_by_name.get(key)
                if fd is not None:
                    psub.SetInParent()
                    _assign(psub, fd, value, f"{pfield}.{key}", where)
                    continue
            fd = _LAYER_FIELDS.get(key)
            if fd is None:
                descs = [pb.LayerParameter.DESCRIPTOR]
                if psub is not None:
                    descs.insert(0, psub.DESCRIPTOR)
                extra = "" if psub is not None else f" (L.{self.type_name} has no own " \
                                                    f"parameters)"
                raise _unknown(key, descs, "", where, extra, lead=f"L.{self.type_name}: ")
            _assign(self.proto, fd, value, key, where)

    def _result(self):
        if self.ntop == 0:
            return self
        if self.ntop == 1:
            return self.tops[0]
        return self.tops


class _Emitter:
    """Turns assigned tops into LayerParameters (pycaffe's ``_to_proto`` walk)."""

    def __init__(self, named: OrderedDict[str, object], autoname: bool = False):
        #: name unassigned tops after their layer type, as pycaffe does, instead of an error
        self.autoname = autoname
        self.top_names: dict[Top, str] = {}
        self.fn_names: dict[Function, str] = {}
        for name, v in named.items():
            if isinstance(v, Top):
                self.top_names[v] = name
            else:
                self.fn_names[v] = name
        self.layers: OrderedDict[Function, pb.LayerParameter] = OrderedDict()
        self.autonames: dict[str, int] = {}

    def top_name(self, top: Top, consumer: Function | None, index: int) -> str:
        fn = top.fn
        if top not in self.top_names:
            if consumer is None:  # an unused, unassigned top of a multi-top layer
                if fn.in_place:
                    return self.top_name(fn.inputs[top.n], None, 0)
                k = self.autonames.get(fn.type_name, 0) + 1
                self.autonames[fn.type_name] = k
                name = f"{fn.type_name}{k}"
                self.top_names[top] = name
                return name
            name = consumer.explicit_name or self._guess_name(consumer)
            raise ConfigError(
                f"bottom {index} is top {top.n} of L.{fn.type_name}(...) made at "
                f"{fn.where_str()}, which was never assigned to the NetSpec (write "
                f"n.<name> = ... for it)", file=consumer.where[0], line=consumer.where[1],
                layer=name, layer_type=consumer.type_name, field="bottom")
        if fn.in_place:
            return self.top_name(fn.inputs[top.n], fn, top.n)
        return self.top_names[top]

    def _guess_name(self, fn: Function) -> str:
        for t in fn.tops:
            if t in self.top_names:
                return self.top_names[t]
        return self.fn_names.get(fn, f"<unnamed {fn.type_name}>")

    def emit(self, fn: Function) -> None:
        if fn in self.layers:
            return
        for inp in fn.inputs:
            if inp in self.top_names or self.autoname:
                self.emit(inp.fn)
        layer = pb.LayerParameter()
        layer.CopyFrom(fn.proto)
        layer.bottom.extend(self.top_name(inp, fn, i) for i, inp in enumerate(fn.inputs))
        if fn.in_place:
            layer.top.extend(layer.bottom)
        else:
            layer.top.extend(self.top_name(t, None, 0) for t in fn.tops)
        if fn.explicit_name is not None:
            layer.name = fn.explicit_name
        else:
            name = next((self.top_names[t] for t in fn.tops if t in self.top_names), None)
            if name is None:
                name = self.fn_names.get(fn)
            if name is None:  # only reachable through Top.to_proto()
                k = self.autonames.get(fn.type_name, 0) + 1
                self.autonames[fn.type_name] = k
                name = f"{fn.type_name}{k}"
            layer.name = name
        self.layers[fn] = layer


def to_proto(*tops) -> pb.NetParameter:
    """A NetParameter holding the layers that ``tops`` depend on (pycaffe's ``to_proto``).
    Tops that are not assigned to a NetSpec are named after their layer type."""
    named: OrderedDict[str, object] = OrderedDict()
    em = _Emitter(named)

    seen: set = set()

    def walk(fn):
        if fn in seen:
            return
        seen.add(fn)
        for inp in fn.inputs:
            if inp not in em.top_names:
                k = em.autonames.get(inp.fn.type_name, 0) + 1
                em.autonames[inp.fn.type_name] = k
                em.top_names[inp] = f"{inp.fn.type_name}{k}"
            walk(inp.fn)
    for t in tops:
        fn = t.fn if isinstance(t, Top) else t
        if isinstance(t, Top) and t not in em.top_names:
            k = em.autonames.get(fn.type_name, 0) + 1
            em.autonames[fn.type_name] = k
            em.top_names[t] = f"{fn.type_name}{k}"
        walk(fn)
    net = pb.NetParameter()
    for t in tops:
        em.emit(t.fn if isinstance(t, Top) else t)
    net.layer.extend(em.layers.values())
    return net


class NetSpec:
    """Tops assigned as attributes (``n.conv1 = ...``) or items (``n["conv1/7x7"] = ...``);
    ``to_proto()`` makes the NetParameter, in assignment order (bottoms first)."""

    def __init__(self, name: str | None = None, **net_fields):
        where = _caller()
        self.__dict__["tops"] = OrderedDict()
        head = pb.NetParameter()
        if name is not None:
            if not isinstance(name, str):
                raise _error(f"NetSpec name must be a string, got {name!r}", where, field="name")
            head.name = name
        for key in ("layer", "layers"):
            if key in net_fields:
                raise _error(f"NetSpec: '{key}' is made from the assigned tops; do not pass it",
                             where, field=key)
        _fill(head, net_fields, "", where)
        self.__dict__["_head"] = head

    # pycaffe's interface
    def __setattr__(self, name, value):
        self._set(name, value)

    def __getattr__(self, name):
        try:
            return self.__dict__["tops"][name]
        except KeyError:
            raise AttributeError(f"NetSpec has no top '{name}'") from None

    def __setitem__(self, key, value):
        self._set(key, value)

    def __getitem__(self, key):
        return self.__dict__["tops"][key]

    def __delitem__(self, key):
        del self.__dict__["tops"][key]

    def __contains__(self, key):
        return key in self.__dict__["tops"]

    def keys(self):
        return list(self.__dict__["tops"])

    def _set(self, name, value):
        if not isinstance(name, str) or not name:
            raise _error(f"a top name must be a non-empty string, got {name!r}")
        if isinstance(value, tuple) and value and all(isinstance(v, Top) for v in value):
            raise _error(f"'{name}': this layer has {len(value)} tops; unpack them "
                         f"(n.a, n.b = L.{value[0].fn.type_name}(..., ntop={len(value)}))")
        if isinstance(value, Function):
            if value.ntop != 0:  # pragma: no cover - calls never return these
                raise _error(f"'{name}': assign the layer's tops, not the layer")
        elif not isinstance(value, Top):
            raise _error(f"'{name}': only tops returned by layer calls (L.<Type>(...)) can be "
                         f"assigned to a NetSpec, got {value!r}")
        self.__dict__["tops"][name] = value

    # output
    #: pycaffe's naming of tops never assigned (``InnerProduct1``...) instead of an error
    autoname = False

    def to_proto(self) -> pb.NetParameter:
        tops = self.__dict__["tops"]
        em = _Emitter(tops, autoname=self.autoname)
        for v in tops.values():
            em.emit(v.fn if isinstance(v, Top) else v)
        net = pb.NetParameter()
        net.CopyFrom(self.__dict__["_head"])
        net.layer.extend(em.layers.values())
        return net

    def to_prototxt(self) -> str:
        from .config.writer import to_prototxt
        return to_prototxt(self.to_proto())

    def to_yaml(self) -> str:
        from .config.writer import to_yaml
        return to_yaml(self.to_proto())

    def to_text(self, fmt: str = "prototxt") -> str:
        from .config.writer import to_text
        return to_text(self.to_proto(), fmt)


class _Layers:
    """``L.<Type>(*bottoms, **params)`` makes a layer call of that type."""

    def __getattr__(self, type_name: str):
        if type_name.startswith("__"):
            raise AttributeError(type_name)

        def layer_fn(*args, **kwargs):
            where = _caller()
            return Function(type_name, args, dict(kwargs), where)._result()
        layer_fn.__name__ = type_name
        layer_fn.__qualname__ = f"layers.{type_name}"
        return layer_fn


class _Params:
    """``P.Pooling.MAX``: enum values by the message they belong to (pycaffe's ``params``);
    ``P.Phase.TRAIN`` for top-level enums."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        for cand in (name + "Parameter", name):
            obj = getattr(pb, cand, None)
            if obj is not None:
                return obj
        known = [n[:-len("Parameter")] for n in dir(pb) if n.endswith("Parameter")]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" (did you mean P.{close[0]}?)" if close else ""
        raise AttributeError(f"no parameter message '{name}Parameter'{hint}")


layers = _Layers()
params = _Params()
