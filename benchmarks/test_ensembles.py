"""pytest-benchmark suite of ``benchmarks/ensembles.py``: per case, one stacked train_step of K
members, K separate train_step calls, and jax.vmap of a jitted step when JAX is installed.
Each case first checks that the stacked step and the separate ones agree."""

import numpy as np
import pytest

import fastnn as fnn

import ensembles

IMPLS = ("stacked", "separate", "jax.vmap")


@pytest.mark.parametrize("case", ensembles.CASES, ids=[c.label for c in ensembles.CASES])
@pytest.mark.parametrize("impl", IMPLS)
def test_ensemble_train_step(benchmark, case, impl):
    net, params, x, y = ensembles.setup(case)
    opt = fnn.adam(lr=ensembles.LR)
    _, _, losses = fnn.train_step(net, opt, params, fnn.init_state(opt, params), x, y)
    for k in (0, case.members - 1):
        member = fnn.member(params, k)
        rows = (x[k], y[k]) if case.own_batches else (x, y)
        _, _, value = fnn.train_step(net, opt, member, fnn.init_state(opt, member), *rows)
        assert losses[k] == pytest.approx(value, rel=1e-5)
    fns = ensembles.callables(case)
    if impl not in fns:
        pytest.skip("JAX is not installed")
    benchmark.group = f"ensemble train_step|{case.label}"
    benchmark(fns[impl])
    assert np.all(np.isfinite(losses))
