"""Data sources (LMDB of Datum, MNIST IDX), Caffe's data transformation."""
