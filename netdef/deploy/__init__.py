"""Deploy: freeze a trained net into one file, run it, and export it to Caffe and ONNX.

* :func:`netdef.deploy.freeze.freeze` — the passes and their before/after report
  (``netdef freeze``);
* :func:`load` — a :class:`~netdef.deploy.predictor.Predictor` for a frozen file
  (``netdef predict``); needs only numpy and protobuf, Numba when present;
* :mod:`netdef.deploy.export_caffe`, :mod:`netdef.deploy.export_onnx` (``netdef export``).

The file format is described in :mod:`netdef.deploy.frozen`.
"""
from .predictor import Predictor, load, numba_available

__all__ = ["Predictor", "load", "numba_available"]
