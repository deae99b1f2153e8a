"""Benchmark settings: thread count (FASTNN_BENCH_THREADS, default 1), recorded in the report; malloc
thresholds fixed (``fastnn.cli.bench.steady_malloc``)."""

import os

import pytest

import fastnn as fnn
from fastnn.cli import bench

THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "1"))


@pytest.fixture(scope="session", autouse=True)
def threads():
    """Run every benchmark with THREADS BLAS and Numba threads (fastnn.set_num_threads)."""
    before = fnn.get_num_threads()["numba"]
    fnn.set_num_threads(THREADS)
    bench.steady_malloc()  # see its docstring: no implementation pays for the malloc state another left
    yield THREADS
    fnn.set_num_threads(before)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["blas_threads"] = THREADS
