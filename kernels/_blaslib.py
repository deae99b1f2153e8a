"""Which BLAS the kernels' matrix products call: found once, at import, before any kernel loads.

Numba's ``np.dot`` calls SciPy's BLAS. NumPy's wheels ship their own OpenBLAS, built with 64-bit
integers and exporting ``scipy_cblas_sgemm64_`` / ``scipy_cblas_dgemm64_``, often a newer release
with faster kernels (SciPy 1.17.1 bundles OpenBLAS 0.3.30, NumPy 2.4.6 bundles 0.3.31: one thread,
float32, (256, 2048) @ (2048, 2048) took 21.9 ms through Numba's ``np.dot``, 16.8 ms through
NumPy's CBLAS called from a kernel).

When NumPy's OpenBLAS is found, its two functions are registered with LLVM under the names in
``SYMBOLS``; compiled kernels call them by name, which keeps them cacheable (a raw function
address in machine code would not be). ``NAME`` says which BLAS is in use and is part of the
kernel cache folder's name, so code compiled against one choice never loads under the other.
Set the environment variable ``FASTNN_BLAS=scipy`` to use Numba's ``np.dot`` regardless.
"""

import ctypes
import glob
import os

import llvmlite.binding as llvm
import numpy as np

# dtype -> (symbol in NumPy's OpenBLAS, the name kernels call it by)
_FUNCTIONS = {np.dtype(np.float32): ("scipy_cblas_sgemm64_", "fastnn_cblas_sgemm64"),
              np.dtype(np.float64): ("scipy_cblas_dgemm64_", "fastnn_cblas_dgemm64")}


def _numpy_openblas():
    """The OpenBLAS library bundled in NumPy's wheel (Linux and Windows: numpy.libs; macOS:
    numpy/.dylibs), loaded; None when NumPy was built against another BLAS."""
    root = os.path.dirname(np.__file__)
    for folder in (os.path.join(root, os.pardir, "numpy.libs"), os.path.join(root, ".dylibs")):
        for path in sorted(glob.glob(os.path.join(folder, "*scipy_openblas64_*"))):
            try:
                # NumPy has loaded this file already: dlopen returns the same instance, so the
                # thread limits fastnn.set_num_threads sets through threadpoolctl apply to it.
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def _register():
    """(NAME, {dtype: symbol name}) after registering NumPy's CBLAS gemm functions with LLVM."""
    if os.environ.get("FASTNN_BLAS", "").lower() == "scipy":
        return "scipy", {}
    lib = _numpy_openblas()
    if lib is None:
        return "scipy", {}
    try:
        addresses = {dtype: ctypes.cast(getattr(lib, symbol), ctypes.c_void_p).value
                     for dtype, (symbol, _) in _FUNCTIONS.items()}
    except AttributeError:  # an OpenBLAS without the expected CBLAS exports
        return "scipy", {}
    symbols = {}
    for dtype, address in addresses.items():
        name = _FUNCTIONS[dtype][1]
        llvm.add_symbol(name, address)
        symbols[dtype] = name
    return "numpy-openblas64", symbols


NAME, SYMBOLS = _register()
