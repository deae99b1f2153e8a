"""Benchmark settings: BLAS thread count (FASTNN_BENCH_THREADS, default 1), recorded in the report."""

import os

import pytest

THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "1"))


@pytest.fixture(scope="session", autouse=True)
def blas_threads():
    """Pin every BLAS (NumPy's and SciPy's, which Numba calls) to THREADS threads.

    threadpoolctl only limits libraries already loaded, and Numba loads SciPy's OpenBLAS lazily,
    so load it first: otherwise Numba's GEMMs would keep OpenBLAS's default thread count.
    """
    import scipy.linalg.cython_blas  # noqa: F401  (loads the OpenBLAS that Numba's `@` calls)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=THREADS):
        yield THREADS


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["blas_threads"] = THREADS
