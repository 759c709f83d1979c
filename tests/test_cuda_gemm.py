"""The tiled GEMM vs numpy: every transpose combination, odd sizes, offsets/leading dimensions,
float32 and float64, the simulator tile and the GPU's 64x64 / 4x4 tile.  NUMBA_ENABLE_CUDASIM=1
is set at import unless the environment says otherwise (see test_cuda_layers.py)."""
import os

os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["s", "d"])
@pytest.mark.parametrize("ta,tb", [(0, 0), (0, 1), (1, 0), (1, 1)])
def test_gemm_transposes_odd_sizes(ta, tb, dtype):
    from netdef.backend.cuda.device import cuda
    from netdef.backend.cuda.gemm import GPU_CONFIG, default_config, gemm
    c = cuda()
    rng = np.random.default_rng(ta * 2 + tb)
    M, N, K = 17, 21, 11
    A = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    B = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    C = rng.standard_normal((M, N)).astype(dtype)
    ref = 1.5 * ((A.T if ta else A) @ (B.T if tb else B)) - 0.5 * C
    configs = [default_config()] + ([GPU_CONFIG] if (ta, tb) == (0, 0) else [])
    for cfg in configs:
        dC = c.to_device(C.ravel())
        gemm(ta, tb, M, N, K, 1.5, c.to_device(A.ravel()), c.to_device(B.ravel()), -0.5, dC,
             config=cfg)
        got = dC.copy_to_host().reshape(M, N)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert np.abs(got - ref).max() <= tol * np.abs(ref).max()


def test_gemm_offsets_and_leading_dimensions():
    from netdef.backend.cuda.device import cuda
    from netdef.backend.cuda.gemm import gemm
    c = cuda()
    rng = np.random.default_rng(9)
    big_a = rng.standard_normal((6, 10))
    big_b = rng.standard_normal((7, 9))
    out = np.zeros((5, 8))
    dA, dB, dC = (c.to_device(a.ravel()) for a in (big_a, big_b, out))
    # C[1:4, 2:7] = A[1:4, 3:7] @ B[2:6, 1:6]
    gemm(0, 0, 3, 5, 4, 1.0, dA, dB, 0.0, dC, offA=1 * 10 + 3, lda=10, offB=2 * 9 + 1, ldb=9,
         offC=1 * 8 + 2, ldc=8)
    got = dC.copy_to_host().reshape(5, 8)
    ref = np.zeros((5, 8))
    ref[1:4, 2:7] = big_a[1:4, 3:7] @ big_b[2:6, 1:6]
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
