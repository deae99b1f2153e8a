"""Thread count for fastnn's compiled code: the BLAS that Numba's matrix products call, and Numba.

fastnn leaves thread counts as it finds them (OpenBLAS starts one thread per CPU).
``set_num_threads(n)`` sets the count for every BLAS library loaded in the process (NumPy's, which
the kernels call when NumPy ships OpenBLAS, and SciPy's, which Numba's ``np.dot`` calls otherwise;
see ``kernels._blaslib``) and for Numba. Measured on the 2-vCPU development machine
(train_step medians, float32): tiny and small nets run the same with 1 or 2 threads (their GEMMs
are below OpenBLAS's threading threshold), medium (784-256-128-10, batch 128) ran ~10% faster with
2; large layers gain the most. Use ``set_num_threads(1)`` when several processes share the CPUs.
Results are deterministic for a given thread count (a different count may change the rounding).

Only the matrix products use threads; the elementwise kernels and the optimizer update stay on one
thread. Measured with 2 threads on the large benchmark net (1024-2048-2048-1024, batch 256, Adam):
an update split across Numba's threads (``prange``, omp or workqueue layer) took 9.5 ms alone
against 18 ms serial (with plain stores; the serial update now streams and takes ~13.5 ms), yet
20-30 ms right after the backward products, so the step got no faster: OpenBLAS's worker thread
keeps spinning for a while after each product and holds one of the two cores. Dynamic scheduling
(``numba.set_parallel_chunksize``) and OMP_WAIT_POLICY=passive did not change that.
"""

import numba

__all__ = ["set_num_threads", "get_num_threads"]


def _blas_controller():
    # Without NumPy's OpenBLAS the kernels call SciPy's BLAS, which SciPy loads lazily: load it
    # first, because threadpoolctl only sees libraries that are already loaded.
    import scipy.linalg.cython_blas  # noqa: F401
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def set_num_threads(n):
    """Use ``n`` threads (1 <= n <= the number of CPUs Numba sees) in BLAS and in Numba."""
    from ._checks import check_positive_int

    n = check_positive_int(n, "n")
    limit = numba.config.NUMBA_NUM_THREADS
    if n > limit:
        raise ValueError(f"n must be at most {limit}, the CPUs available to Numba; got {n}")
    _blas_controller().limit(limits=n, user_api="blas")
    numba.set_num_threads(n)
    return n


def get_num_threads():
    """{"blas": the largest thread count among loaded BLAS libraries, "numba": Numba's count}."""
    infos = [info for info in _blas_controller().info() if info.get("user_api") == "blas"]
    return {"blas": max((i["num_threads"] for i in infos), default=1), "numba": numba.get_num_threads()}
