"""Caffe-compatible protobuf schema (generated from ``protos/netdef.proto``).

``pb`` is the generated module; its messages (``pb.NetParameter``,
``pb.SolverParameter``, ``pb.BlobProto`` ...) are wire- and text-compatible
with BVLC Caffe's ``caffe.proto`` but live in package ``netdef``.
Regenerate with ``python scripts/gen_proto.py``.
"""
from . import netdef_pb2 as pb

__all__ = ["pb", "netdef_pb2"]

netdef_pb2 = pb
