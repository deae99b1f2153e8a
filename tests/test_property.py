"""Property tests: random depths, widths, batch sizes, dtypes, activations and losses.

Depth is capped at 3 hidden layers: each depth is a separate Numba compilation (~1 s).
"""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn as fnn
import fastnn.reference as ref
from conftest import LOSS_CASES, TOL, assert_tree_close, assert_tree_dtype, make_targets

nets = st.integers(1, 3).flatmap(lambda depth: st.builds(
    lambda sizes, acts: fnn.Net(sizes=tuple(sizes), activations=tuple(acts)),
    st.lists(st.integers(1, 7), min_size=depth + 1, max_size=depth + 1),
    st.lists(st.sampled_from(fnn.ACTIVATIONS), min_size=depth, max_size=depth),
))
cases = st.fixed_dictionaries({
    "net": nets,
    "batch": st.integers(0, 9),
    "dtype": st.sampled_from([np.float32, np.float64]),
    "loss": st.sampled_from(LOSS_CASES),
    "seed": st.integers(0, 2**16),
})

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _materialise(case):
    net, batch, dtype = case["net"], case["batch"], case["dtype"]
    rng = np.random.default_rng(case["seed"])
    params = fnn.init(net, seed=case["seed"], dtype=dtype)
    x = rng.normal(size=(batch, net.sizes[0]))
    loss, kind = case["loss"]
    y = make_targets(kind, batch, net.sizes[-1], rng)
    return net, params, x, loss, y, dtype


@SETTINGS
@given(cases)
def test_forward_matches_reference(case):
    net, params, x, _, _, dtype = _materialise(case)
    out = fnn.forward(net, params, x)
    assert out.shape == (x.shape[0], net.sizes[-1]) and out.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out, ref.forward(net, params, x), **TOL[np.dtype(dtype)])


@SETTINGS
@given(cases)
def test_grad_matches_reference(case):
    net, params, x, loss, y, dtype = _materialise(case)
    value, grads = fnn.grad(net, params, x, y, loss=loss)
    ref_value, ref_grads = ref.grad(net, params, x, y, loss=loss)
    np.testing.assert_allclose(value, ref_value, **TOL[np.dtype(dtype)])
    assert_tree_dtype(grads, dtype)
    # Gradients are sums over batch and width: scale the absolute tolerance with them.
    scale = max(1, x.shape[0]) * max(net.sizes)
    assert_tree_close(grads, ref_grads, dtype, atol=TOL[np.dtype(dtype)]["atol"] * scale)


@SETTINGS
@given(cases, st.sampled_from(["sgd", "adam", "adamw", "rmsprop", "adagrad"]))
def test_train_step_matches_reference_and_keeps_shapes(case, name):
    net, params, x, loss, y, dtype = _materialise(case)
    opt = getattr(fnn, name)(lr=1e-2)
    state = fnn.init_state(opt, params)
    p1, s1, l1 = fnn.train_step(net, opt, params, state, x, y, loss=loss)
    p2, s2, l2 = ref.train_step(net, opt, params, state, x, y, loss=loss)
    np.testing.assert_allclose(l1, l2, **TOL[np.dtype(dtype)])
    assert [a.shape for pair in p1 for a in pair] == [a.shape for pair in params for a in pair]
    assert_tree_dtype(p1, dtype)
    # Adaptive optimizers divide by sqrt(v): where a gradient is ~0 its float32 rounding is amplified.
    tol = TOL[np.dtype(dtype)]
    if dtype == np.float32 and name != "sgd":
        tol = dict(rtol=1e-3, atol=1e-3 * 1e-2)
    assert_tree_close(p1, p2, dtype, **tol)
    assert s1.count == s2.count == 1
