"""Benchmark settings: thread count (FASTNN_BENCH_THREADS, default 1), recorded in the report."""

import os

import pytest

import fastnn as fnn

THREADS = int(os.environ.get("FASTNN_BENCH_THREADS", "1"))


@pytest.fixture(scope="session", autouse=True)
def threads():
    """Run every benchmark with THREADS BLAS and Numba threads (fastnn.set_num_threads)."""
    before = fnn.get_num_threads()["numba"]
    fnn.set_num_threads(THREADS)
    yield THREADS
    fnn.set_num_threads(before)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["blas_threads"] = THREADS
