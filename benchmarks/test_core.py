"""pytest-benchmark suite: the cases of ``fastnn.bench`` (train_step tiny to large, forward, one fit
epoch) for fastnn against fastnn.reference (and PyTorch and JAX when installed), plus compile time and cold
start.

Run: ``pytest benchmarks`` (one BLAS thread; FASTNN_BENCH_THREADS=2 for two). Groups are
``"{op}|{workload}"`` so each table compares the implementations on one workload. Every case first
checks that fastnn and the reference agree, so the suite doubles as a smoke test.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn.cli import bench

IMPLS = {"fastnn": fnn, "reference": ref}


# The floors of the BLAS-bound workloads: the step's matrix products alone (NumPy), and its
# optimizer update alone.
TRAIN_CASES = ([(w, i) for w in ("tiny", "small", "medium", "large") for i in IMPLS]
               + [(w, f) for w in bench.GEMM_FLOOR_WORKLOADS for f in bench.FLOORS])


@pytest.mark.parametrize("workload, impl", TRAIN_CASES)
def test_train_step(benchmark, workload, impl):
    net, params, x, y, loss, opt, state = bench.setup(workload)
    benchmark.group = f"train_step|{workload}"
    if impl == "gemm":
        benchmark(bench.gemm_floor(net, params, x))
        return
    if impl == "update":
        benchmark(bench.update_floor(opt, params, state))
        return
    fast = fnn.train_step(net, opt, params, state, x, y, loss=loss)
    slow = ref.train_step(net, opt, params, state, x, y, loss=loss)
    assert fast[2] == pytest.approx(slow[2], rel=1e-4)
    impl_step = IMPLS[impl].train_step
    benchmark(bench.chained(lambda p, s: impl_step(net, opt, p, s, x, y, loss), params, state))


def _group(op, workload, detail):
    """The group of the fastnn / reference benchmarks of the same case, so torch sits beside them."""
    if op == "fit":
        return f"fit|10k samples, batch {detail}"
    return f"{op}|{workload}" + ("-1" if detail == 1 else "")


# The Predictor case times torch's forward on one sample again: left out.
@pytest.mark.parametrize("op, workload, detail", [(op, name, detail) for op, _, name, detail in bench.CASES
                                                  if op != "Predictor"])
@pytest.mark.parametrize("peer", ["torch", "jax"])
def test_peer(benchmark, peer, op, workload, detail):
    """PyTorch eager and JAX jit on the same cases (each skipped when it is not installed)."""
    pytest.importorskip(peer)
    benchmark.group = _group(op, workload, detail)
    benchmark(getattr(bench, f"{peer}_call")(op, workload, detail))


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("workload", ["tiny", "small", "medium", "tiny-1"])
def test_forward(benchmark, workload, impl):
    single = workload.endswith("-1")
    net, params, x, *_ = bench.setup(workload.removesuffix("-1"))
    x = x[0] if single else x
    benchmark.group = f"forward|{workload}"
    np.testing.assert_allclose(fnn.forward(net, params, x), ref.forward(net, params, x), rtol=1e-4, atol=1e-5)
    benchmark(IMPLS[impl].forward, net, params, x)


@pytest.mark.parametrize("impl", ["Predictor", "forward"])
def test_predictor_one_sample(benchmark, impl):
    """One sample through the tiny net: a Predictor (params packed once) against fastnn.forward."""
    net, params, x, *_ = bench.setup("tiny")
    predictor = fnn.Predictor(net, params)
    benchmark.group = "forward|tiny-1"
    np.testing.assert_allclose(predictor(x[0]), ref.forward(net, params, x[0]), rtol=1e-4, atol=1e-5)
    benchmark(predictor if impl == "Predictor" else lambda x: fnn.forward(net, params, x), x[0])


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("batch_size", [32, 10_000])
def test_fit_epoch(benchmark, batch_size, impl):
    """One epoch over 10,000 samples on 32-64-64-10 tanh with adam (reference: a train_step loop)."""
    net, params, x, y, loss, opt, _ = bench.setup("fit")
    benchmark.group = f"fit|10k samples, batch {batch_size}"
    kw = dict(loss=loss, optimizer=opt, epochs=1, batch_size=batch_size, progress=False)
    fast, slow = fnn.fit(net, params, x, y, **kw)[1], ref.fit(net, params, x, y, **kw)[1]
    assert fast["loss"][0] == pytest.approx(slow["loss"][0], rel=1e-4)
    benchmark(IMPLS[impl].fit, net, params, x, y, **kw)


_FIRST_USE = (
    "import numpy as np, fastnn as fnn\n"
    "net = fnn.mlp([16, 64, 64, 1], activation='tanh'); params = fnn.init(net, seed=0)\n"
    "opt = fnn.sgd(1e-2); x = np.zeros((32, 16), np.float32); y = np.zeros((32, 1), np.float32)\n"
    "fnn.train_step(net, opt, params, fnn.init_state(opt, params), x, y); fnn.forward(net, params, x[0])\n"
)


@pytest.mark.parametrize("cache", ["empty", "warm"])
def test_first_use_in_a_new_process(benchmark, tmp_path, cache):
    """import fastnn + first train_step + forward: compiling everything (empty cache) or loading it."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    run = lambda: subprocess.run([sys.executable, "-c", _FIRST_USE], env=env, check=True)  # noqa: E731
    benchmark.group = "cold start|tiny"
    if cache == "warm":
        run()
        benchmark.pedantic(run, rounds=3)
    else:
        benchmark.pedantic(run, rounds=1)  # the cache folder starts empty
