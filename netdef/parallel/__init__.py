"""Training across processes (MPI): see :mod:`netdef.parallel.mpi`."""
