"""``netdef.caffe``: pycaffe's interface over netdef's nets and solvers.

``import netdef.caffe as caffe`` runs pycaffe code: ``caffe.Net(prototxt, caffe.TEST,
weights=...)``, ``net.blobs``/``net.params``, ``forward(end=...)``, ``caffe.SGDSolver``,
``caffe.io.Transformer``, ``caffe.draw``, ``NetSpec``.  :func:`install` (or ``python -m
netdef.caffe SCRIPT.py``) makes unchanged ``import caffe`` / ``from caffe.proto import
caffe_pb2`` lines resolve here.  See docs/PYCAFFE.md for what is provided and what is not.

Importing this compiles no kernel and imports neither numba.cuda, h5py, lmdb nor pydot; the
submodules ``io``, ``draw``, ``coord_map``, ``classifier``, ``detector`` load on first use.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

from ..layers.python_layer import PyLayerBase as Layer
from ..layers.registry import layer_types as _layer_types
from . import proto  # noqa: F401
from .net import Blob, Net
from .net_spec import NetSpec, layers, params, to_proto
from .proto.caffe_pb2 import TEST, TRAIN
from .runtime import (Timer, has_nccl, init_log, log, set_device, set_mode_cpu, set_mode_gpu,
                      set_multiprocess, set_random_seed, set_solver_count, set_solver_rank,
                      solver_count, solver_rank)
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,
                     SGDSolver, get_solver)

#: the pycaffe interface version this module follows (netdef's own: netdef.__version__)
__version__ = "1.0.0"

__all__ = ["Net", "Blob", "Layer", "TRAIN", "TEST", "SGDSolver", "NesterovSolver",
           "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver", "AdamSolver", "get_solver",
           "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed", "layer_type_list",
           "NetSpec", "layers", "params", "to_proto", "Classifier", "Detector", "Timer",
           "init_log", "log", "solver_count", "set_solver_count", "solver_rank",
           "set_solver_rank", "set_multiprocess", "has_nccl", "install", "io", "draw",
           "coord_map", "net_spec", "proto"]

_LAZY_MODULES = ("io", "draw", "coord_map", "classifier", "detector")
_LAZY_NAMES = {"Classifier": "classifier", "Detector": "detector"}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'caffe' (netdef.caffe) has no attribute '{name}'")


def layer_type_list() -> list[str]:
    """The registered layer type names."""
    return list(_layer_types())


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``caffe.X`` to ``netdef.caffe.X`` once :func:`install` ran."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith("caffe.") and sys.modules.get("caffe") is sys.modules[__name__]:
            real = "netdef." + fullname
            if importlib.util.find_spec(real) is not None:
                return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("netdef." + spec.name)

    def exec_module(self, module):
        pass


_ALIAS = _Alias()


def install() -> None:
    """Register this module as ``caffe`` (with ``caffe.io``, ``caffe.proto.caffe_pb2``,
    ``caffe.draw``...), so unchanged pycaffe code imports it.  A real pycaffe already imported
    under that name is an error: two ``caffe`` modules cannot share one process."""
    me = sys.modules[__name__]
    other = sys.modules.get("caffe")
    if other is not None and other is not me:
        from ..errors import ConfigError
        raise ConfigError(f"another 'caffe' module is already imported "
                          f"({getattr(other, '__file__', None) or other!r}); install() "
                          f"must run before 'import caffe'")
    sys.modules["caffe"] = me
    for sub in ("proto", "proto.caffe_pb2", "net_spec", "net", "solver", "runtime"):
        sys.modules[f"caffe.{sub}"] = sys.modules[f"{__name__}.{sub}"]
    if _ALIAS not in sys.meta_path:
        sys.meta_path.insert(0, _ALIAS)
