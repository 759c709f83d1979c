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


@pytest.mark.parametrize("ta,tb", [(0, 1), (1, 0)])
@pytest.mark.parametrize("split", [None, 3, 7])
def test_gemm_split_k(ta, tb, split):
    """Split over K (the weight-gradient shape: small M x N, long K) with beta != 0 and an
    offset/leading dimension into C: equal to numpy; None lets the planner split."""
    from netdef.backend.cuda.device import cuda
    from netdef.backend.cuda.gemm import SIM_CONFIG, gemm, plan
    c = cuda()
    rng = np.random.default_rng(11 + ta)
    M, N, K = 5, 6, 203
    A = rng.standard_normal((K, M) if ta else (M, K))
    B = rng.standard_normal((N, K) if tb else (K, N))
    C = rng.standard_normal((M, N + 2))
    ref = C.copy()
    ref[:, 1:N + 1] = 0.75 * ((A.T if ta else A) @ (B.T if tb else B)) + 2.0 * C[:, 1:N + 1]
    if split is None:
        assert plan(M, N, K, SIM_CONFIG, 4)[2] > 1       # the planner splits this shape
    dC = c.to_device(C.ravel())
    gemm(ta, tb, M, N, K, 0.75, c.to_device(A.ravel()), c.to_device(B.ravel()), 2.0, dC,
         offC=1, ldc=N + 2, split=split)
    np.testing.assert_allclose(dC.copy_to_host().reshape(M, N + 2), ref, rtol=0, atol=1e-11)


def test_gemm_plan_fills_an_h100():
    """LeNet's weight-gradient GEMMs at batch 64 launch >= 2 blocks per SM of an H100."""
    from netdef.backend.cuda.gemm import GPU_CONFIG, gpu_plan, plan
    conv1 = gpu_plan(20, 25, 64 * 24 * 24)             # dW = dy (20 x NL) . col^T
    conv2 = gpu_plan(50, 500, 64 * 8 * 8)
    assert conv1["blocks"] >= 264 and conv2["blocks"] >= 264
    gx, gy, split, kc = plan(20, 25, 64 * 24 * 24, GPU_CONFIG, 264)
    assert kc % GPU_CONFIG[2] == 0 and (split - 1) * kc < 64 * 576 <= split * kc
    # a GEMM that fills the device on its own is not split
    assert plan(4096, 4096, 4096, GPU_CONFIG, 264)[2] == 1


@pytest.mark.parametrize("split", [1, 3])
def test_gemm_blocked_operands_bias_and_relu(split):
    """The layouts a convolution uses without layout copies, against numpy: C written as NCHW
    images (columns (image, pixel)) with a per-row bias and a ReLU; A read as the NCHW dy of a
    weight gradient (k = (image, pixel)); B read as NCHW dy for dx; a per-column bias with a
    leaky ReLU -- each also split over K."""
    from netdef.backend.cuda.device import cuda
    from netdef.backend.cuda.gemm import A_K_BLOCKED, B_N_BLOCKED, C_N_BLOCKED, gemm
    c = cuda()
    rng = np.random.default_rng(5)
    n, o, L, kk = 3, 5, 7, 66           # images, channels, pixels per image, rows of col
    W = rng.standard_normal((o, kk))
    col = rng.standard_normal((kk, n * L))
    bias = rng.standard_normal(o)
    # forward: y (n, o, L) = relu(W col + bias)
    y = c.to_device(np.full(n * o * L, 7.0))
    gemm(0, 0, o, n * L, kk, 1.0, c.to_device(W.ravel()), c.to_device(col.ravel()), 0.0, y,
         ldc=L, blocked=(C_N_BLOCKED, L, o * L), bias=c.to_device(bias), relu=0.0, split=split)
    ref = np.maximum(W @ col + bias[:, None], 0).reshape(o, n, L).transpose(1, 0, 2)
    np.testing.assert_allclose(y.copy_to_host().reshape(n, o, L), ref, rtol=0, atol=1e-12)
    # dW (o x kk) += dy (o x (n L)) col^T, dy in NCHW
    dy = rng.standard_normal((n, o, L))
    dw0 = rng.standard_normal((o, kk))
    dw = c.to_device(dw0.ravel())
    gemm(0, 1, o, kk, n * L, 1.0, c.to_device(dy.ravel()), c.to_device(col.ravel()), 1.0, dw,
         lda=L, blocked=(A_K_BLOCKED, L, o * L), split=split)
    dycl = dy.transpose(1, 0, 2).reshape(o, n * L)
    np.testing.assert_allclose(dw.copy_to_host().reshape(o, kk), dw0 + dycl @ col.T, rtol=0,
                               atol=1e-11)
    # dcol (kk x (n L)) = W^T dy, dy in NCHW
    dcol = c.to_device(np.zeros(kk * n * L))
    gemm(1, 0, kk, n * L, o, 1.0, c.to_device(W.ravel()), c.to_device(dy.ravel()), 0.0, dcol,
         ldb=L, blocked=(B_N_BLOCKED, L, o * L), split=split)
    np.testing.assert_allclose(dcol.copy_to_host().reshape(kk, n * L), W.T @ dycl, rtol=0,
                               atol=1e-11)
    # InnerProduct: y (m x no) = leaky_relu(x W^T + b), b per column
    x = rng.standard_normal((4, kk))
    out = c.to_device(np.zeros(4 * o))
    gemm(0, 1, 4, o, kk, 1.0, c.to_device(x.ravel()), c.to_device(W.ravel()), 0.0, out,
         bias=c.to_device(bias), bias_on="n", relu=0.1, split=split)
    v = x @ W.T + bias
    np.testing.assert_allclose(out.copy_to_host().reshape(4, o), np.where(v > 0, v, 0.1 * v),
                               rtol=0, atol=1e-12)
