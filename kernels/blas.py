"""Matrix products into preallocated outputs, for use inside kernels.

``matmul_into(a, b, out)``: out = a b;  ``matmul_tn_into``: out = a^T b;  ``matmul_nt_into``:
out = a b^T;  ``matmul_tn_add_into``: out += a^T b (a gradient summed over row blocks). ``a``,
``b`` and ``out`` are 2-D arrays of one float dtype; ``out`` must not overlap either input. Each
call checks that the shapes agree (raising ValueError, like ``np.dot``), because a BLAS call reads
and writes through raw pointers.

The product goes to NumPy's CBLAS when ``_blaslib`` found it and all three arrays are
C-contiguous (the transposes are BLAS flags on the untransposed arrays), else to Numba's
``np.dot`` (SciPy's BLAS). Which one is chosen while compiling, so the call costs no branch.
"""

import numpy as np
from numba import types
from numba.extending import overload

from . import _blaslib
from ._config import OPTIONS

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112  # CBLAS enum values


def matmul_into(a, b, out):
    """out <- a @ b."""
    np.dot(a, b, out)


def matmul_tn_into(a, b, out):
    """out <- a.T @ b."""
    np.dot(a.T, b, out)


def matmul_nt_into(a, b, out):
    """out <- a @ b.T."""
    np.dot(a, b.T, out)


def matmul_tn_add_into(a, b, out):
    """out <- out + a.T @ b."""
    out += np.dot(a.T, b)


def _cblas_gemm(dtype):
    """The registered ``cblas_?gemm`` (ILP64) for ``dtype`` as a Numba external function, or None."""
    name = _blaslib.SYMBOLS.get(np.dtype(str(dtype)))
    if name is None:
        return None
    i32, i64, ptr = types.int32, types.int64, types.voidptr
    return types.ExternalFunction(name, types.void(i32, i32, i32, i64, i64, i64, dtype, ptr, i64, ptr, i64,
                                                   dtype, ptr, i64))


def _overload_product(stub, trans_a, trans_b, add=False):
    """Register the kernel implementation of ``stub``: out = op(a) op(b), or out += op(a) op(b)."""

    @overload(stub, jit_options=OPTIONS)
    def _impl(a, b, out):
        arrays = (a, b, out)
        gemm = _cblas_gemm(out.dtype)
        if gemm is None or any(x.layout != "C" or x.dtype != out.dtype for x in arrays):
            return stub  # np.dot, compiled by Numba
        flag_a = _TRANS if trans_a else _NO_TRANS
        flag_b = _TRANS if trans_b else _NO_TRANS

        def cblas_product(a, b, out):
            m, n = out.shape
            k = a.shape[0] if trans_a else a.shape[1]
            a_rows = a.shape[1] if trans_a else a.shape[0]
            b_rows, b_cols = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
            if a_rows != m or b_rows != k or b_cols != n:
                raise ValueError("matmul: shapes of a, b and out do not agree")
            if m == 0 or n == 0:
                return
            if k == 0:  # a sum over nothing; BLAS rejects a zero leading dimension
                if not add:
                    out[:] = 0
                return
            one = out.dtype.type(1.0)
            beta = out.dtype.type(1.0 if add else 0.0)
            # Row-major leading dimensions are the stored row lengths, whatever the flags.
            gemm(_ROW_MAJOR, flag_a, flag_b, m, n, k, one, a.ctypes.data, a.shape[1],
                 b.ctypes.data, b.shape[1], beta, out.ctypes.data, n)

        return cblas_product

    return _impl


_overload_product(matmul_into, False, False)
_overload_product(matmul_tn_into, True, False)
_overload_product(matmul_nt_into, False, True)
_overload_product(matmul_tn_add_into, True, False, add=True)
