"""``type: "Python"``: a layer whose forward and backward a user writes in Python (pycaffe's
PythonLayer).

``python_param { module: "m" layer: "Cls" param_str: "..." }`` imports module ``m`` (searched
in the net file's folder, the current directory, then ``sys.path``, like pycaffe run with
``PYTHONPATH=.``) and instantiates ``Cls`` with pycaffe's contract:

* ``setup(bottom, top)`` once, ``reshape(bottom, top)`` whenever shapes may change,
  ``forward(bottom, top)``, ``backward(top, propagate_down, bottom)``;
* ``self.param_str`` (the string from the definition), ``self.phase`` (0 TRAIN, 1 TEST) and
  ``self.blobs`` (learnable blobs: ``self.blobs.add_blob(*shape)`` in ``setup``; the solver
  updates them like any layer's parameters);
* bottoms and tops are :class:`PyBlob` objects: ``.data`` / ``.diff`` numpy arrays (write with
  ``blob.data[...] = ...``), ``.reshape(*shape)``, ``.shape``, ``.count``, and the legacy
  ``.num/.channels/.height/.width``.

A module written for pycaffe (``import caffe`` and ``class L(caffe.Layer)``) works unchanged:
while it is imported, and only when no real ``caffe`` package is installed, ``import caffe``
finds :mod:`netdef.caffe` (netdef's pycaffe: ``caffe.Layer`` is :class:`PyLayerBase`).

Running user code is the user's choice (:func:`set_python_layer_mode`): RUN where the user runs
the net (train, test, time, pycaffe; the module's file is logged), REFUSE for files from
elsewhere (the deploy loader, unless ``--allow-python-layers``; ``--no-python-layers``) -- a
Python layer then refuses to be constructed -- and SKIP where nothing should run (summary):
no module is imported and the layer's tops are unknown unless ``--input-shape`` gives them.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import types

from ..errors import ConfigError
from .base import Layer
from .registry import register_layer

log = logging.getLogger(__name__)

#: what a Python layer does when a net is built: RUN imports its module and runs it (train,
#: test, time, pycaffe: as Caffe does), REFUSE raises (frozen files, --no-python-layers), SKIP
#: imports nothing and leaves its tops' shapes unknown unless --input-shape gives them
#: (summary: shape inference must not run code from the model's folder)
RUN, REFUSE, SKIP = "run", "refuse", "skip"
_MODE = RUN
_DEFAULT_HINT = "pass --allow-python-layers to run them"
_HINT = _DEFAULT_HINT


def python_layer_mode() -> str:
    return _MODE


def set_python_layer_mode(mode: str, hint: str | None = None) -> tuple[str, str]:
    """Set RUN, REFUSE or SKIP process-wide (``hint``: what the refusal tells the user to do);
    returns the previous (mode, hint)."""
    global _MODE, _HINT
    if mode not in (RUN, REFUSE, SKIP):
        raise ValueError(f"unknown Python layer mode {mode!r}")
    prev = (_MODE, _HINT)
    _MODE, _HINT = mode, hint or _DEFAULT_HINT
    return prev


@contextlib.contextmanager
def python_layers_mode(mode: str, hint: str | None = None):
    prev = set_python_layer_mode(mode, hint)
    try:
        yield
    finally:
        set_python_layer_mode(*prev)


def allow_python_layers() -> bool:
    """Whether Python layers may import and run user modules (default True)."""
    return _MODE == RUN


def set_allow_python_layers(allow: bool) -> bool:
    """Allow (RUN) or forbid (REFUSE) Python layers process-wide; returns whether they were
    allowed."""
    prev, _ = set_python_layer_mode(RUN if allow else REFUSE)
    return prev == RUN


@contextlib.contextmanager
def python_layers_allowed(allow: bool):
    """``with python_layers_allowed(False): Net(...)`` builds a net that must not run user
    code (a Python layer then raises ConfigError)."""
    with python_layers_mode(RUN if allow else REFUSE):
        yield


# -- what the user's class sees ------------------------------------------------------------------

class PyBlob:
    """A pycaffe-like view of a netdef Blob."""
    __slots__ = ("_blob",)

    def __init__(self, blob):
        self._blob = blob

    @property
    def data(self):
        return self._blob.data

    @data.setter
    def data(self, value):
        self._blob.data = value

    @property
    def diff(self):
        return self._blob.diff

    @diff.setter
    def diff(self, value):
        self._blob.diff = value

    @property
    def shape(self) -> tuple:
        return tuple(self._blob.shape)

    @property
    def count(self) -> int:
        return self._blob.count

    def reshape(self, *shape) -> None:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self._blob.reshape(tuple(int(s) for s in shape))

    def _legacy(self, i: int) -> int:
        s = self._blob.shape
        if len(s) > 4:
            raise ValueError(f"blob '{self._blob.name}' has {len(s)} axes: num/channels/height/"
                             f"width need at most 4; use .shape")
        return int(s[i]) if i < len(s) else 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def __repr__(self):
        return f"PyBlob({self._blob.name!r}, shape={list(self._blob.shape)})"


class PyBlobVec:
    """The layer's learnable blobs as pycaffe shows them (``self.blobs``)."""

    def __init__(self, layer: PythonLayer):
        self._layer = layer

    def add_blob(self, *shape) -> None:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        self._layer.blobs.append(self._layer.make_blob(tuple(int(s) for s in shape)))

    def __len__(self):
        return len(self._layer.blobs)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [PyBlob(b) for b in self._layer.blobs[i]]
        return PyBlob(self._layer.blobs[i])

    def __iter__(self):
        return (PyBlob(b) for b in self._layer.blobs)


class PyLayerBase:
    """Base class for user layers (``caffe.Layer``, :mod:`netdef.caffe`)."""

    def __init__(self, param=None):
        self.layer_param = param

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


def _caffe_module() -> types.ModuleType:
    """netdef's pycaffe (:mod:`netdef.caffe`): the ``caffe`` a Python layer's module imports
    when no real pycaffe is installed."""
    import netdef.caffe
    return netdef.caffe


def _import_user_module(name: str, dirs: list[str]):
    """Import ``name`` with ``dirs`` searched first; ``caffe`` is netdef.caffe while it
    imports, unless a real pycaffe exists."""
    added = [d for d in dirs if d and d not in sys.path]
    sys.path[:0] = added
    lent = False
    try:
        if "caffe" not in sys.modules and importlib.util.find_spec("caffe") is None:
            sys.modules["caffe"] = _caffe_module()
            lent = True
        importlib.invalidate_caches()
        return importlib.import_module(name)
    finally:
        if lent:
            sys.modules.pop("caffe", None)
        for d in added:
            with contextlib.suppress(ValueError):
                sys.path.remove(d)


@register_layer("Python", "python_param")
class PythonLayer(Layer):
    """A user layer written in Python (pycaffe's contract: setup/reshape/forward/backward on
    blobs with numpy ``.data``/``.diff``, ``self.param_str``, ``self.phase``, ``self.blobs``)."""

    def __init__(self, param, *args, **kwargs):
        super().__init__(param, *args, **kwargs)
        pp = param.python_param
        self.module_name = pp.module
        self.class_name = pp.layer
        if _MODE == REFUSE:
            raise ConfigError(
                f"this model contains Python layers (module '{pp.module}'); {_HINT}",
                layer=self.name, layer_type="Python", field="python_param.module")
        #: SKIP: nothing imported; the tops' shapes come from --input-shape or stay unknown
        self.skipped = _MODE == SKIP
        self.user = None

    # -- loading -----------------------------------------------------------------------------
    def _search_dirs(self) -> list[str]:
        dirs = []
        if self.base_dir:
            dirs.append(self.base_dir)
        dirs.append(os.getcwd())
        return dirs

    def _load_class(self):
        mod, cls = self.module_name, self.class_name
        if not mod:
            raise self.config_error("python_param.module must name the Python module holding "
                                    "the layer class", field="python_param.module")
        if not cls:
            raise self.config_error(f"python_param.layer must name the layer class in module "
                                    f"'{mod}'", field="python_param.layer")
        dirs = self._search_dirs()
        try:
            module = _import_user_module(mod, dirs)
        except ModuleNotFoundError as e:
            if e.name and (mod == e.name or mod.startswith(e.name + ".")):
                where = ", ".join(dict.fromkeys(dirs))
                raise self.config_error(
                    f"cannot import Python module '{mod}': no {mod.replace('.', '/')}.py in "
                    f"{where} or on sys.path (put it beside the net file or add its folder "
                    f"to PYTHONPATH)", field="python_param.module") from None
            raise self.config_error(f"importing Python module '{mod}' failed: {e}",
                                    field="python_param.module") from e
        except Exception as e:
            raise self.config_error(f"importing Python module '{mod}' failed: "
                                    f"{type(e).__name__}: {e}", field="python_param.module") \
                from e
        log.info("Python layer '%s': imported module '%s' from %s", self.name, mod,
                 getattr(module, "__file__", None) or "(built in)")
        klass = getattr(module, cls, None)
        if klass is None or not callable(klass):
            found = sorted(k for k, v in vars(module).items()
                           if isinstance(v, type) and v.__module__ == module.__name__)
            raise self.config_error(
                f"module '{mod}' ({getattr(module, '__file__', '?')}) has no layer class "
                f"'{cls}'" + (f" (it defines: {', '.join(found)})" if found else ""),
                field="python_param.layer")
        return klass

    def _instantiate(self, klass):
        try:
            user = klass(self.param)
        except TypeError:
            user = klass()
        user.param_str = self.param.python_param.param_str
        user.phase = self.phase
        user.blobs = PyBlobVec(self)
        for name in ("setup", "reshape", "forward", "backward"):
            if not callable(getattr(user, name, None)):
                raise self.config_error(f"class '{self.class_name}' of module "
                                        f"'{self.module_name}' has no method {name}(...)",
                                        field="python_param.layer")
        return user

    def _call(self, what: str, *args):
        try:
            return getattr(self.user, what)(*args)
        except Exception as e:
            if hasattr(e, "add_note"):
                e.add_note(f"in {what}() of Python layer '{self.name}' "
                           f"({self.module_name}.{self.class_name})")
            raise

    # -- contract ------------------------------------------------------------------------------
    def layer_setup(self, bottom, top):
        self._shape_only_fallback = False
        if self.skipped:
            return
        try:
            klass = self._load_class()
        except ConfigError as e:
            # shape inference only (summary): a loss whose module is not importable here
            if not self.init_params and top and all(self.param.loss_weight) and \
                    len(self.param.loss_weight) == len(top) and e.field == "python_param.module":
                log.warning("%s; assuming layer '%s' outputs scalar losses", e.message,
                            self.name)
                self._shape_only_fallback = True
                return
            raise
        self.user = self._instantiate(klass)
        self._call("setup", [PyBlob(b) for b in bottom], [PyBlob(t) for t in top])

    def reshape(self, bottom, top):
        if self.skipped:
            for t, name in zip(top, self.param.top):
                t.reshape(self.input_shapes[name])
            return
        if self._shape_only_fallback:
            for t in top:
                t.reshape(())
            return
        self._call("reshape", [PyBlob(b) for b in bottom], [PyBlob(t) for t in top])

    def forward(self, bottom, top):
        if self.user is None:
            raise self.config_error(f"cannot run: Python module '{self.module_name}' was not "
                                    f"imported", field="python_param.module")
        self._call("forward", [PyBlob(b) for b in bottom], [PyBlob(t) for t in top])

    def backward(self, top, propagate_down, bottom):
        if self.user is None:
            return
        self._call("backward", [PyBlob(t) for t in top], [bool(p) for p in propagate_down],
                   [PyBlob(b) for b in bottom])
