"""CUDA backend (numba.cuda): device memory mirrors for blobs, kernels for the layer families,
solver updates on the device, and the dispatch table used by a Net in device mode.

Importing this package does not import ``numba.cuda``; :func:`device.cuda` does, after applying
the ``np.row_stack`` shim.  Under ``NUMBA_ENABLE_CUDASIM=1`` every kernel runs in the CUDA
simulator (one Python thread per CUDA thread: keep shapes tiny)."""
from .device import available, cuda, device_query, is_simulator, select_device  # noqa: F401

#: the layer types with CUDA kernels (what ``layers.TABLE`` registers; a test keeps the two
#: equal), known without importing numba.cuda — for ``netdef layers``
CUDA_LAYER_TYPES = frozenset("""
AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss Convolution
Crop Deconvolution Dropout ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HingeLoss Im2col
InfogainLoss InnerProduct LRN LSTM LSTMUnit Log MVN MultinomialLogisticLoss PReLU Parameter
Pooling Power RNN ReLU Reduction Reshape SPP Scale Sigmoid SigmoidCrossEntropyLoss Silence Slice
Softmax SoftmaxWithLoss Split Swish TanH Threshold Tile""".split())
