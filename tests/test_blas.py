"""The kernels' matrix products (kernels.blas) against NumPy, on both BLAS choices."""

import glob
import os
import pathlib
import subprocess
import sys

import numba
import numpy as np
import pytest

from fastnn._kernels import _blaslib, _config
from fastnn._kernels.blas import matmul_into, matmul_nt_into, matmul_tn_add_into, matmul_tn_into

ROOT = pathlib.Path(__file__).resolve().parents[1]


@numba.njit(**_config.OPTIONS)
def _product(kind, a, b, out):
    if kind == 0:
        matmul_into(a, b, out)
    elif kind == 1:
        matmul_tn_into(a, b, out)
    elif kind == 2:
        matmul_nt_into(a, b, out)
    else:
        matmul_tn_add_into(a, b, out)


# kind -> (NumPy formula, shape of a, shape of b) for out of shape (m, n), inner size k
_KINDS = {
    0: (lambda a, b: a @ b, lambda m, k, n: ((m, k), (k, n))),
    1: (lambda a, b: a.T @ b, lambda m, k, n: ((k, m), (k, n))),
    2: (lambda a, b: a @ b.T, lambda m, k, n: ((m, k), (n, k))),
    3: (lambda a, b: a.T @ b, lambda m, k, n: ((k, m), (k, n))),  # added to what out holds
}
_ADDS = {3}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", sorted(_KINDS))
@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (3, 5, 7), (32, 16, 64), (64, 1, 10), (130, 70, 3),
                                     (0, 4, 5), (4, 0, 5), (4, 5, 0)])
def test_products_match_numpy(dtype, kind, m, k, n):
    formula, shapes = _KINDS[kind]
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    a_shape, b_shape = shapes(m, k, n)
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    if kind in _ADDS:
        out = rng.standard_normal((m, n)).astype(dtype)
        start = out.astype(np.float64)
    else:
        out = np.full((m, n), np.nan, dtype=dtype)  # every entry must be written, k == 0 included
        start = 0.0
    _product(kind, a, b, out)
    expected = start + formula(a.astype(np.float64), b.astype(np.float64))
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(out, expected, rtol=tol, atol=tol * max(k, 1))


@pytest.mark.parametrize("kind", sorted(_KINDS))
def test_mismatched_shapes_raise_instead_of_reading_out_of_bounds(kind):
    _, shapes = _KINDS[kind]
    a_shape, b_shape = shapes(4, 3, 5)
    a, b = np.ones(a_shape), np.ones(b_shape)
    for out_shape in [(4, 6), (5, 5)]:
        with pytest.raises(ValueError):
            _product(kind, a, b, np.empty(out_shape))
    with pytest.raises(ValueError):
        _product(kind, a, np.ones((b_shape[0] + 1, b_shape[1] + 1)), np.empty((4, 5)))


@pytest.mark.filterwarnings("ignore::numba.NumbaPerformanceWarning")  # the point of the test
def test_non_contiguous_operands_take_numpys_dot():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((6, 8))[:, ::2]  # strided: not C-contiguous
    b = rng.standard_normal((4, 3))
    out = np.empty((6, 3))
    _product(0, a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-13)
    start = rng.standard_normal((4, 3))
    out = start.copy()
    b = rng.standard_normal((6, 3))
    _product(3, a, b, out)  # out += a.T b
    np.testing.assert_allclose(out, start + a.T @ b, rtol=1e-13)


def test_numpys_openblas_is_used_when_numpy_ships_one():
    root = os.path.dirname(np.__file__)
    bundled = glob.glob(os.path.join(root, os.pardir, "numpy.libs", "*scipy_openblas64_*")) + glob.glob(
        os.path.join(root, ".dylibs", "*scipy_openblas64_*"))
    assert _blaslib.NAME == ("numpy-openblas64" if bundled else "scipy")
    assert all(folder.endswith(_blaslib.NAME) for folder in _config.CACHE_DIRS)
    assert bool(_blaslib.SYMBOLS) == bool(bundled)


def test_scipy_blas_when_asked(tmp_path):
    """FASTNN_BLAS=scipy: Numba's np.dot path, cached in a folder of its own, same products."""
    code = (
        "import numpy as np, fastnn as fnn\n"
        "from fastnn import reference as ref\n"
        "from fastnn._kernels import _blaslib, _config\n"
        "assert _blaslib.NAME == 'scipy' and not _blaslib.SYMBOLS, _blaslib.NAME\n"
        "assert all(d.endswith('-scipy') for d in _config.CACHE_DIRS), _config.CACHE_DIRS\n"
        "net = fnn.mlp([3, 4, 2]); p = fnn.init(net, seed=0)\n"
        "x = np.random.default_rng(0).standard_normal((5, 3))\n"
        "np.testing.assert_allclose(fnn.forward(net, p, x), ref.forward(net, p, x), rtol=1e-12)\n"
    )
    env = dict(os.environ, FASTNN_BLAS="scipy", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
