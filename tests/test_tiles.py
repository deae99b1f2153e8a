"""kernels/tiles.py: the register-tiled product on transposed blocks against NumPy, at sizes that
are not multiples of the tile, in both of its stride forms (W and W^T), overwriting and adding."""

import numpy as np
import pytest

from fastnn._kernels import simd, tiles

DTYPES = (np.float32, np.float64)
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}


def _padded_rows(rows, dtype):
    w = simd.lanes(dtype)
    return -(-rows // w) * w


@pytest.mark.parametrize("dtype", DTYPES)
# rows 96 and 100: 6 and 7 float32 vectors with AVX-512, so quads, a pair and a single (tiles.QUADS)
@pytest.mark.parametrize("k, n, rows", [(1, 1, 1), (3, 5, 7), (16, 64, 32), (64, 1, 33), (5, 1, 40), (17, 15, 40),
                                         (5, 9, 130), (7, 6, 96), (9, 13, 100),
                                         (1, 13, 40), (1, 7, 100)])
@pytest.mark.parametrize("form", ["forward", "backward"])
@pytest.mark.parametrize("add", [False, True])
def test_tiled_product_matches_numpy(dtype, k, n, rows, form, add):
    rng = np.random.default_rng(k * 1000 + n * 10 + rows)
    rp = _padded_rows(rows, dtype)
    if form == "forward":  # z^T (n x rp) = W^T h^T, W (k x n)
        W = rng.normal(size=(k, n)).astype(dtype)
        s_sum, s_out, expected_a = n, 1, W
    else:  # dh^T (n x rp) = W dz^T, W (n x k): A(p, q) = W[q, p]
        W = rng.normal(size=(n, k)).astype(dtype)
        s_sum, s_out, expected_a = 1, k, W.T
    b_t = np.zeros((k, rp), dtype)
    b_t[:, :rows] = rng.normal(size=(k, rows))
    start = rng.normal(size=(n, rp)).astype(dtype)
    c_t = start.copy()
    tiles.tiled_product_into(W.reshape(-1), s_sum, s_out, b_t.reshape(-1), c_t.reshape(-1), rp, add, np.zeros(0, dtype))
    expected = expected_a.T.astype(np.float64) @ b_t + (start if add else 0)
    np.testing.assert_allclose(c_t, expected, **TOL[dtype])


def test_tiled_product_stores_nothing_outside_its_output():
    """Clamped edge tiles compute duplicates but store only the valid part: a guard band around
    the output stays untouched."""
    dtype = np.float32
    k, n, rows = 6, 5, 9
    rp = _padded_rows(rows, dtype)
    rng = np.random.default_rng(0)
    W = rng.normal(size=(k, n)).astype(dtype)
    b_t = rng.normal(size=(k, rp)).astype(dtype)
    guarded = np.full(n * rp + 2 * rp, 7.0, dtype)
    tiles.tiled_product_into(W.reshape(-1), n, 1, b_t.reshape(-1), guarded[rp:rp + n * rp], rp, False, np.zeros(0, dtype))
    assert (guarded[:rp] == 7).all() and (guarded[rp + n * rp:] == 7).all()
    np.testing.assert_allclose(guarded[rp:rp + n * rp].reshape(n, rp), W.T @ b_t, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, n, rows", [(1, 1, 1), (16, 64, 32), (64, 1, 33), (5, 7, 130), (17, 10, 9), (13, 70, 50)])
@pytest.mark.parametrize("add", [False, True])
def test_tiled_product_gives_the_weight_gradient_from_row_layout_dz(dtype, m, n, rows, add):
    """dW = h^T dz with A = h^T broadcast (s_sum 1, s_out rp), B^T = dz (rows x n padded)."""
    rng = np.random.default_rng(m * 100 + n + rows)
    rp, n_pad = _padded_rows(rows, dtype), _padded_rows(n, dtype)
    h_t = np.zeros((m, rp), dtype)
    h_t[:, :rows] = rng.normal(size=(m, rows))
    dz = np.zeros((rows, n_pad), dtype)
    dz[:, :n] = rng.normal(size=(rows, n))
    start = rng.normal(size=(m, n_pad)).astype(dtype)
    dW = start.copy()
    tiles.tiled_product_into(h_t.reshape(-1), 1, rp, dz.reshape(-1), dW.reshape(-1), n_pad, add, np.zeros(0, dtype))
    expected = h_t[:, :rows].astype(np.float64) @ dz + (start if add else 0)
    np.testing.assert_allclose(dW, expected, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("add", [False, True])
@pytest.mark.parametrize("n", [6, 1])  # 1: the single-output tile
@pytest.mark.parametrize("k", [7, 1])  # 1: one summed row, the outer product
def test_tiled_product_adds_a_bias_per_output(dtype, add, n, k):
    rows = 19
    rng = np.random.default_rng(3)
    rp = _padded_rows(rows, dtype)
    W = rng.normal(size=(k, n)).astype(dtype)
    b_t = rng.normal(size=(k, rp)).astype(dtype)
    bias = rng.normal(size=n).astype(dtype)
    start = rng.normal(size=(n, rp)).astype(dtype)
    c_t = start.copy()
    tiles.tiled_product_into(W.reshape(-1), n, 1, b_t.reshape(-1), c_t.reshape(-1), rp, add, bias)
    expected = W.T.astype(np.float64) @ b_t + bias[:, None] + (start if add else 0)
    np.testing.assert_allclose(c_t, expected, **TOL[dtype])
