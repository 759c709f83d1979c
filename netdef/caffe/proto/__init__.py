"""``caffe.proto``: the package of ``caffe_pb2``."""
from . import caffe_pb2  # noqa: F401
