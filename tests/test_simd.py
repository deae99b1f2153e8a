"""kernels/simd.py: each vector operation against NumPy, masked tails that never touch memory past
the array (an array ending at a page with no access), and the same results from a narrower build."""

import os
import subprocess
import sys
import textwrap
from fractions import Fraction

import numba
import numpy as np
import pytest

from fastnn._kernels import simd, views
from fastnn._kernels._config import OPTIONS

DTYPES = (np.float32, np.float64)


@numba.njit(**OPTIONS)
def _elementwise(a, b, c, out):
    """out[0], out[1], ... = a * b + c, a + b, a - b, a * b, max(a, b), min(a, b), splat(c[0]),
    over whole vectors, then the tail by masked loads and stores."""
    w = simd.width(a)
    n = a.size
    whole = n - n % w
    for i in range(0, whole, w):
        x, y, z = simd.vload(a, i), simd.vload(b, i), simd.vload(c, i)
        _store_all(out, i, x, y, z, c[0], w)
    if whole < n:
        rest = n - whole
        x, y, z = simd.vload_first(a, whole, rest), simd.vload_first(b, whole, rest), simd.vload_first(c, whole, rest)
        _store_all(out, whole, x, y, z, c[0], rest)


@numba.njit(inline="always", **OPTIONS)
def _store_all(out, i, x, y, z, s, count):
    results = (simd.vfma(x, y, z), simd.vadd(x, y), simd.vsub(x, y), simd.vmul(x, y), simd.vmax(x, y),
               simd.vmin(x, y), simd.vsplat(s))
    for k in range(7):
        simd.vstore_first(out[k], i, results[k], count)


@numba.njit(**OPTIONS)
def _sums(a):
    """(vsum of each whole vector of a, in order; lane 0 of each)."""
    w = simd.width(a)
    sums = np.empty(a.size // w, a.dtype)
    firsts = np.empty(a.size // w, a.dtype)
    for k in range(a.size // w):
        v = simd.vload(a, k * w)
        sums[k] = simd.vsum(v)
        firsts[k] = simd.vlane(v, 0)
    return sums, firsts


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 16, 17, 33])
def test_vector_operations_match_numpy(dtype, n):
    rng = np.random.default_rng(n)
    a, b, c = (rng.normal(size=n).astype(dtype) for _ in range(3))
    a[0] = np.nan if n > 2 else a[0]  # maxnum / minnum: a NaN lane gives the other operand
    out = np.full((7, n), -99.0, dtype)
    _elementwise(a, b, c, out)
    # One rounding of the exact a b + c (Fraction arithmetic is exact; float() rounds once, and
    # for float32 the float64 rounding of a float32 product plus a float32 is exact too).
    fma = np.array([float(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z))) if x == x else np.nan
                    for x, y, z in zip(a, b, c)]).astype(dtype)
    np.testing.assert_array_equal(out[0], fma)
    np.testing.assert_array_equal(out[1], a + b)
    np.testing.assert_array_equal(out[2], a - b)
    np.testing.assert_array_equal(out[3], a * b)
    np.testing.assert_array_equal(out[4], np.fmax(a, b))
    np.testing.assert_array_equal(out[5], np.fmin(a, b))
    np.testing.assert_array_equal(out[6], np.full(n, c[0]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_lanes_follow_the_dtype_and_the_reduction_adds_every_lane(dtype):
    w = simd.lanes(dtype)
    assert w * np.dtype(dtype).itemsize == simd.LANES * 4 and simd.LANES in (4, 8, 16)
    a = np.arange(3 * w, dtype=dtype) + 1
    sums, firsts = _sums(a)
    np.testing.assert_array_equal(sums, a.reshape(3, w).sum(axis=1))
    np.testing.assert_array_equal(firsts, a[::w])


@numba.njit(**OPTIONS)
def _doubled_into(src, dst):
    """dst = 2 src over whole vectors, the tail by a masked load and a masked store."""
    w = simd.width(src)
    n = src.size
    whole = n - n % w
    for i in range(0, whole, w):
        v = simd.vload(src, i)
        simd.vstore(dst, i, simd.vadd(v, v))
    if whole < n:
        v = simd.vload_first(src, whole, n - whole)
        simd.vstore_first(dst, whole, simd.vadd(v, v), n - whole)


def test_masked_tails_never_touch_memory_past_the_array():
    """The source and the destination each end on the last byte before a page with no access:
    reading or writing past them would kill the process."""
    code = textwrap.dedent("""
        import ctypes, mmap, numpy as np
        import tests.test_simd as t
        page = mmap.PAGESIZE
        libc = ctypes.CDLL(None, use_errno=True)

        def guarded():
            buf = mmap.mmap(-1, 2 * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
            base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
            assert libc.mprotect(ctypes.c_void_p(base + page), ctypes.c_size_t(page), 0) == 0
            return buf

        src_buf, dst_buf = guarded(), guarded()
        for dtype in (np.float32, np.float64):
            for n in (1, 3, 5, 7, 9, 15, 17):
                offset = page - n * np.dtype(dtype).itemsize
                src = np.frombuffer(src_buf, dtype, count=n, offset=offset)
                dst = np.frombuffer(dst_buf, dtype, count=n, offset=offset)
                src[:] = np.arange(n)
                dst[:] = -1
                t._doubled_into(src, dst)
                assert (dst == 2 * np.arange(n)).all(), (dtype, n, dst)
        print("ok")
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(_root()), os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=_root())
    assert result.returncode == 0 and result.stdout.strip() == "ok", (result.returncode, result.stderr[-2000:])


def _root():
    import pathlib

    return pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("cpu, lanes", [("x86-64", 4), ("haswell", 8)])
def test_a_narrower_build_gives_the_same_results(tmp_path, cpu, lanes):
    """Compiled for an older CPU (NUMBA_CPU_NAME), the vectors are narrower and the results equal."""
    code = textwrap.dedent("""
        import numpy as np
        import tests.test_simd as t
        print(t.simd.LANES)
        rng = np.random.default_rng(0)
        for dtype in (np.float32, np.float64):
            a, b, c = (rng.normal(size=19).astype(dtype) for _ in range(3))
            out = np.zeros((7, 19), dtype)
            t._elementwise(a, b, c, out)
            print(repr(out.tobytes().hex()))
    """)
    env = dict(os.environ, NUMBA_CPU_NAME=cpu, NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(_root()), os.environ.get("PYTHONPATH", "")]))
    env.pop("NUMBA_CPU_FEATURES", None)
    narrow = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=_root())
    assert narrow.returncode == 0, narrow.stderr[-2000:]
    env.pop("NUMBA_CPU_NAME")
    host = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=_root())
    assert host.returncode == 0, host.stderr[-2000:]
    assert narrow.stdout.split()[0] == str(lanes)
    assert narrow.stdout.split()[1:] == host.stdout.split()[1:]


def test_the_peak_kernel_does_the_flops_it_counts():
    """peak_fma's result is a function of every chain: with a = 1 and b = 1e-7 * x[0], each chain
    grows by b per iteration."""
    x = np.ones(simd.lanes(np.float64), np.float64)
    iterations = 1000
    got = simd.peak_fma(x, iterations)
    expected = simd.PEAK_CHAINS * simd.lanes(np.float64) * (1.0 + iterations * 1e-7)
    assert got == pytest.approx(expected, rel=1e-12)


@numba.njit(**OPTIONS)
def _transposed_block_into(src, source, dst, target):
    simd.transpose_block(src, source, dst, target)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_transpose_block_moves_one_block_and_nothing_else(dtype):
    w = simd.lanes(dtype)
    a = np.arange(3 * w * 21, dtype=dtype).reshape(3 * w, 21)
    out = np.full((2 * w + 3, 30), -1, dtype)
    _transposed_block_into(a.reshape(-1), (w * 21 + 2, 21), out.reshape(-1), (3 * 30 + 5, 30))
    expected = np.full_like(out, -1)
    expected[3:3 + w, 5:5 + w] = a[w:2 * w, 2:2 + w].T
    np.testing.assert_array_equal(out, expected)


@numba.njit(**OPTIONS)
def _borrowed_sums(pairs, x, scale):
    pairs, x, scale = views.borrow((pairs, x, scale))
    total = 0.0
    for l in range(len(pairs)):
        W, b = pairs[l]
        total += W.sum() + b.sum()
    x[1] = -1.0  # the same memory
    return total * scale, x.shape[0], x.strides[0]


def test_borrowed_arrays_are_the_same_arrays():
    """``views.borrow`` keeps every array's memory, shape and strides (a strided one included),
    through nested tuples, and leaves scalars alone; values that may hold references are refused."""
    rng = np.random.default_rng(0)
    pairs = ((rng.normal(size=(3, 4)), rng.normal(size=4)), (rng.normal(size=(4, 2)), rng.normal(size=2)))
    x = np.zeros(10)[::2]
    total, n, stride = _borrowed_sums(pairs, x, 2.0)
    assert total == pytest.approx(2 * sum(W.sum() + b.sum() for W, b in pairs))
    assert (n, stride) == (5, 16) and x[1] == -1.0 and np.count_nonzero(x) == 1

    @numba.njit
    def borrow_list(a):
        return views.borrow([a])

    with pytest.raises(numba.core.errors.TypingError):
        borrow_list(np.zeros(3))


@numba.njit(**OPTIONS)
def _views_of(a):
    from_flat = views.matrix(a, 3, 2, 4)
    part = views.flat(a, 1, 5)
    from_flat[1, 2] = -1.0
    return from_flat.shape, part.shape, from_flat.copy(), part.copy()


def test_views_share_the_memory_at_the_offset():
    a = np.arange(20.0)
    m_shape, p_shape, m, p = _views_of(a)
    assert m_shape == (2, 4) and p_shape == (5,)
    assert a[3 + 4 + 2] == -1.0  # written through the view
    np.testing.assert_array_equal(m, a[3:11].reshape(2, 4))
    np.testing.assert_array_equal(p, np.arange(1.0, 6.0))


@numba.njit(**OPTIONS)
def _arrays_at(pairs, k_max):
    """Every array_at(pairs, k) for k < k_max, copied, after writing k into element 0 of each."""
    out = []
    for k in range(k_max):
        a = views.array_at(pairs, k)
        a[0] = k
        out.append(a.copy())
    return out


@pytest.mark.parametrize("depth", [1, 3, 6])
def test_array_at_is_every_array_of_the_pairs_flat_and_shares_memory(depth):
    rng = np.random.default_rng(depth)
    pairs = tuple((rng.normal(size=(2 + l, 3 + l)).astype(np.float32), rng.normal(size=3 + l).astype(np.float32))
                  for l in range(depth))
    expected = [a.reshape(-1).copy() for pair in pairs for a in pair]
    got = _arrays_at(pairs, 2 * depth + 1)  # one past the end: the last b, as documented
    for k, want in enumerate(expected):
        want[0] = k
        np.testing.assert_array_equal(got[k], want)
        # written through the view (the last b then once more, by the call one past the end)
        assert pairs[k // 2][k % 2].reshape(-1)[0] == (k if k < 2 * depth - 1 else 2 * depth)
    np.testing.assert_array_equal(got[-1][1:], expected[-1][1:])


@numba.njit(**OPTIONS)
def _aligned(n, like):
    a = views.aligned_empty(n, like)
    a[:] = 1.0
    return a.ctypes.data, a.size, a.sum()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 100, 4099])
def test_aligned_empty_starts_on_a_cache_line(dtype, n):
    for _ in range(5):  # several allocations: malloc hands out blocks at various offsets
        address, size, total = _aligned(n, np.zeros(1, dtype))
        assert address % 64 == 0 and size == n and total == n
