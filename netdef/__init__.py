"""netdef: Caffe-style declarative deep learning with Numba kernels."""
__version__ = "0.1.0"
