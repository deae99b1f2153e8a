"""fit_lbfgs: full-batch L-BFGS-B over the compiled loss and gradient, against the reference,
finite differences and closed-form least squares; its history, its errors, and its inputs left
untouched."""

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn import _lbfgs_loop, lbfgs, network
from fastnn._fit_loop import Dataset


def _regression(rows=120, n_in=4, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, n_in))
    y = np.tanh(x @ rng.normal(size=(n_in, n_out))) + 0.1 * rng.normal(size=(rows, n_out))
    return x, y


@pytest.fixture(params=["fused", "blas"])
def path(request, monkeypatch):
    """The compiled gradient through the fused kernels, or through BLAS."""
    monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS", 1 << 40 if request.param == "fused" else 0)
    monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS_WIDE", 0)
    return request.param


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_the_penalised_objective_matches_finite_differences(path, loss):
    """SciPy's objective (mean loss + l2 / 2 * squared weights, float64) and its gradient, on both
    kernel paths: the gradient agrees with central differences of the value."""
    net = fnn.mlp([4, 7, 3], activation="tanh")
    assert network.fused(net) == (path == "fused")
    x, y = _regression(n_out=3)
    if loss == "softmax_cross_entropy":
        y = np.argmax(y, axis=1)
    layout = _lbfgs_loop.FlatLayout(net.shapes())
    train = Dataset(net, (x, y), loss, np.dtype(np.float64), "x")
    penalised = _lbfgs_loop.Penalised(lbfgs._CompiledObjective(net, layout, train, loss), layout, 0.3)
    theta = layout.pack(fnn.init(net, seed=1, dtype=np.float64), np.empty(layout.size))
    step = 1e-5
    numeric = np.array([(penalised(theta + step * e)[0] - penalised(theta - step * e)[0]) / (2 * step)
                        for e in np.eye(layout.size)])
    np.testing.assert_allclose(penalised(theta)[1], numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_fit_lbfgs_follows_the_reference(path, dtype, loss):
    """Same iterates as the reference's loop (``reference.grad`` for the gradient) to rounding:
    float64 to ~1e-9 after 15 iterations, float32 to its precision."""
    net = fnn.mlp([4, 9, 3], activation="tanh")
    x, y = _regression(n_out=3)
    if loss == "softmax_cross_entropy":
        y = np.argmax(y, axis=1)
    params = fnn.init(net, seed=2, dtype=dtype)
    got, history = fnn.fit_lbfgs(net, params, x, y, loss, max_iter=15, l2=1e-3, validation_data=(x[:30], y[:30]))
    expected, ref_history = ref.fit_lbfgs(net, params, x, y, loss, max_iter=15, l2=1e-3,
                                          validation_data=(x[:30], y[:30]))
    tol = dict(rtol=1e-7, atol=1e-9) if dtype == np.float64 else dict(rtol=2e-2, atol=2e-3)
    for (gW, gb), (eW, eb) in zip(got, expected):
        assert gW.dtype == dtype and gb.dtype == dtype
        np.testing.assert_allclose(gW, eW, **tol)
        np.testing.assert_allclose(gb, eb, **tol)
    assert history.epochs == ref_history.epochs == len(history["loss"]) == len(history["val_loss"]) <= 15
    np.testing.assert_allclose(history["loss"], ref_history["loss"], **tol)
    assert history["loss"][-1] < history["loss"][0]


@pytest.mark.parametrize("l2", [0.0, 0.5])
def test_a_linear_net_reaches_the_least_squares_solution(l2):
    """One identity layer with mse is (ridge) least squares: mean (x w + b - y)^2 + l2 / 2 |w|^2
    is least at (2 / n) X1^T X1 [w; b] + l2 [w; 0] = (2 / n) X1^T y, X1 = [x, 1]."""
    x, y = _regression(rows=80, n_in=3, n_out=1, seed=4)
    net = fnn.mlp([3, 1])
    params, history = fnn.fit_lbfgs(net, fnn.init(net, seed=0, dtype=np.float64), x, y, max_iter=200, tol=1e-10,
                                    l2=l2)
    x1 = np.hstack([x, np.ones((80, 1))])
    system = 2 / 80 * x1.T @ x1 + l2 * np.diag([1.0, 1.0, 1.0, 0.0])
    solution = np.linalg.solve(system, 2 / 80 * x1.T @ y)
    # to what L-BFGS-B's own stopping rule on the relative change of f (~2e-9) leaves
    np.testing.assert_allclose(params[0][0], solution[:3], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(params[0][1], solution[3], rtol=1e-4, atol=1e-5)
    assert history.converged


def test_fit_lbfgs_leaves_its_arguments_untouched_and_returns_new_arrays():
    net = fnn.mlp([4, 6, 2], activation="relu")
    x, y = _regression()
    params = fnn.init(net, seed=3, dtype=np.float32)
    copies = [a.copy() for pair in params for a in pair]
    x_copy, y_copy = x.copy(), y.copy()
    got, _ = fnn.fit_lbfgs(net, params, x, y, max_iter=5)
    for a, c in zip([a for pair in params for a in pair], copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(y, y_copy)
    for pair, original in zip(got, params):
        for a, b in zip(pair, original):
            assert a.flags.c_contiguous and a.flags.writeable and not np.shares_memory(a, b)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(max_iter=0), ValueError, "max_iter"),
    (dict(max_iter=2.5), TypeError, "max_iter"),
    (dict(max_iter=True), TypeError, "max_iter"),
    (dict(max_fun=-1), ValueError, "max_fun"),
    (dict(tol=-1e-3), ValueError, "tol"),
    (dict(l2=float("nan")), ValueError, "l2"),
    (dict(l2="big"), TypeError, "l2"),
    (dict(loss="hinge"), ValueError, "loss"),
    (dict(validation_data=np.zeros((3, 4))), TypeError, "validation_data"),
])
def test_bad_arguments_are_rejected_before_any_work(kwargs, error, match):
    net = fnn.mlp([4, 5, 2])
    x, y = _regression()
    with pytest.raises(error, match=match):
        fnn.fit_lbfgs(net, fnn.init(net, seed=0), x, y, **kwargs)
    with pytest.raises(error, match=match):
        ref.fit_lbfgs(net, fnn.init(net, seed=0), x, y, **kwargs)


def test_bad_data_gets_fits_errors():
    net = fnn.mlp([4, 5, 2])
    params = fnn.init(net, seed=0)
    x, y = _regression()
    with pytest.raises(ValueError, match="same number of samples"):
        fnn.fit_lbfgs(net, params, x, y[:-1])
    with pytest.raises(ValueError, match="features"):
        fnn.fit_lbfgs(net, params, x[:, :3], y)
    with pytest.raises(ValueError, match="no samples"):
        fnn.fit_lbfgs(net, params, x[:0], y[:0])


def test_a_non_finite_start_raises_floating_point_error():
    net = fnn.mlp([4, 5, 2])
    x, y = _regression()
    params = fnn.init(net, seed=0, dtype=np.float64)
    huge = ((params[0][0] * 1e300, params[0][1]),) + params[1:]
    y_big = y * 1e300
    with pytest.raises(FloatingPointError, match="initial params"):
        fnn.fit_lbfgs(net, huge, x * 1e10, y_big)
