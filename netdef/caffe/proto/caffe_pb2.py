"""``caffe.proto.caffe_pb2``: netdef's Caffe-compatible messages under pycaffe's module path.

The messages are those of :mod:`netdef.proto` (wire- and text-compatible with BVLC Caffe's
``caffe.proto``; their protobuf package is ``netdef``): ``NetParameter``, ``LayerParameter``,
``SolverParameter``, ``BlobProto``, ``Datum``..., the ``Phase`` values ``TRAIN``/``TEST``.
"""
from netdef.proto.netdef_pb2 import *  # noqa: F401,F403
from netdef.proto.netdef_pb2 import DESCRIPTOR, TEST, TRAIN, Phase  # noqa: F401
