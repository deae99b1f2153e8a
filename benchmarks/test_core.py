"""train_step and forward at three sizes, fastnn against fastnn.reference.

Run: ``pytest benchmarks`` (one BLAS thread; FASTNN_BENCH_THREADS=2 for two). Groups are
``"{op}|{workload}"`` so each table row compares the implementations on one workload. Every
benchmark first checks that fastnn and the reference agree, so the suite doubles as a smoke test.
"""

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref

# name: (sizes, activation, batch, loss, optimizer)
WORKLOADS = {
    "tiny": ((16, 64, 64, 1), "tanh", 32, "mse", lambda: fnn.sgd(lr=1e-2)),
    "small": ((64, 128, 10), "relu", 64, "softmax_cross_entropy", lambda: fnn.adam(lr=1e-3)),
    "medium": ((784, 256, 128, 10), "relu", 128, "softmax_cross_entropy", lambda: fnn.adam(lr=1e-3)),
}
IMPLS = {"fastnn": fnn, "reference": ref}


def _setup(workload, dtype=np.float32):
    sizes, activation, batch, loss, make_opt = WORKLOADS[workload]
    net = fnn.mlp(list(sizes), activation=activation)
    params = fnn.init(net, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch, sizes[0])).astype(dtype)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, sizes[-1], size=batch)
    else:
        y = rng.normal(size=(batch, sizes[-1])).astype(dtype)
    opt = make_opt()
    return net, params, x, y, loss, opt, fnn.init_state(opt, params)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_train_step(benchmark, workload, impl):
    net, params, x, y, loss, opt, state = _setup(workload)
    benchmark.group = f"train_step|{workload}"
    fast = fnn.train_step(net, opt, params, state, x, y, loss=loss)
    slow = ref.train_step(net, opt, params, state, x, y, loss=loss)
    assert fast[2] == pytest.approx(slow[2], rel=1e-4)
    benchmark(IMPLS[impl].train_step, net, opt, params, state, x, y, loss)


@pytest.mark.parametrize("impl", list(IMPLS))
@pytest.mark.parametrize("workload", list(WORKLOADS) + ["tiny-1"])
def test_forward(benchmark, workload, impl):
    single = workload.endswith("-1")
    net, params, x, *_ = _setup(workload.removesuffix("-1"))
    x = x[0] if single else x
    benchmark.group = f"forward|{workload}"
    np.testing.assert_allclose(fnn.forward(net, params, x), ref.forward(net, params, x), rtol=1e-4, atol=1e-5)
    benchmark(IMPLS[impl].forward, net, params, x)
