"""gaussian_nll: PyTorch's GaussianNLLLoss (full=False) for a mean and log-variance head, in the
kernels against the reference, its own formula and central differences, and fit on data whose
noise grows with the input."""

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref

from conftest import DTYPES, assert_tree_close

NET = fnn.mlp([3, 10, 4], activation="tanh")  # 2 means, 2 log-variances


def _torch_definition(out, target):
    """GaussianNLLLoss(full=False, eps=1e-6, reduction="mean") with var = exp(log-variance)."""
    d = out.shape[1] // 2
    var = np.maximum(np.exp(out[:, d:].astype(np.float64)), 1e-6)
    return float(np.mean(0.5 * (np.log(var) + (out[:, :d] - target) ** 2 / var)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
def test_the_kernels_match_the_reference_and_the_definition(kernel_path, dtype, weighted):
    rng = np.random.default_rng(0)
    params = fnn.init(NET, seed=1, dtype=dtype)
    x, y = rng.normal(size=(21, 3)), rng.normal(size=(21, 2))
    w = rng.uniform(0.5, 2, size=21) if weighted else None
    value, grads = fnn.grad(NET, params, x, y, "gaussian_nll", sample_weight=w)
    expected_value, expected = ref.grad(NET, params, x, y, "gaussian_nll", sample_weight=w)
    assert value == pytest.approx(expected_value, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_tree_close(grads, expected, dtype)
    if not weighted:
        out = fnn.forward(NET, params, x.astype(dtype))
        assert value == pytest.approx(_torch_definition(out, y), rel=1e-5 if dtype == np.float32 else 1e-12)


def test_gradient_matches_central_differences():
    params = fnn.init(NET, seed=2, dtype=np.float64)
    x, y = np.random.default_rng(1).normal(size=(8, 3)), np.random.default_rng(2).normal(size=(8, 2))
    assert fnn.check_grad(NET, params, x, y, loss="gaussian_nll") < 1e-6


def test_extreme_log_variances_stay_finite_and_the_clamp_holds():
    net = fnn.mlp([1, 4], activation="identity")
    W = np.zeros((1, 4))
    b = np.array([0.5, 0.0, -40.0, 800.0])  # means 0.5, 0; log-variances -40 (clamped), 800 (huge)
    params = ((W, b),)
    value, grads = fnn.grad(net, params, np.zeros((1, 1)), np.array([[0.0, 0.0]]), "gaussian_nll")
    log_floor = np.log(1e-6)
    expected = 0.5 * ((log_floor + 0.25 / 1e-6) + (800.0 + 0.0)) / 2
    assert value == pytest.approx(expected, rel=1e-12)
    gb = grads[0][1]
    assert np.isfinite(gb).all()
    assert gb[0] == pytest.approx(0.5 / 1e-6 / 2, rel=1e-12)  # d/dmu: e / v / N, v the floor
    assert gb[2] == pytest.approx(0.5 * np.exp(-40 - log_floor) * (1 - 0.25 / 1e-6) / 2, rel=1e-9)
    assert gb[3] == pytest.approx(0.25, rel=1e-12)  # (1 - 0) / 2 / N


def test_targets_are_half_the_outputs_wide():
    params = fnn.init(NET, seed=0)
    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match=r"must have shape \(5, 2\)"):
        fnn.grad(NET, params, x, np.zeros((5, 4)), "gaussian_nll")
    odd = fnn.mlp([3, 3])
    with pytest.raises(ValueError, match="even output width"):
        fnn.grad(odd, fnn.init(odd), x, np.zeros((5, 1)), "gaussian_nll")
    one = fnn.mlp([3, 2])
    value, _ = fnn.grad(one, fnn.init(one), x, np.zeros(5), "gaussian_nll")  # one target: (batch,) too
    assert np.isfinite(value)


def test_fit_learns_noise_that_grows_with_the_input():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(2000, 1))
    y = np.sin(x) + rng.normal(size=x.shape) * (0.05 + 0.5 * np.abs(x))
    net = fnn.mlp([1, 32, 32, 2], activation="tanh")
    params, history = fnn.fit(net, fnn.init(net, seed=0), x, y, loss="gaussian_nll", optimizer=fnn.adam(3e-3),
                              epochs=40, batch_size=64, metrics=["mae"], progress=False)
    assert history["loss"][-1] < history["loss"][0]
    grid = np.array([[0.0], [1.0], [1.9]])
    out = fnn.forward(net, params, grid)
    sd = np.exp(0.5 * out[:, 1])
    assert sd[0] < sd[1] < sd[2]  # the predicted noise grows with |x|
    # near the truth where the noise is smooth in x; at the kink x = 0 a tanh net rounds it off
    np.testing.assert_allclose(sd[1:], 0.05 + 0.5 * np.abs(grid[1:, 0]), rtol=0.2)
    assert sd[0] < 0.25
    np.testing.assert_allclose(out[:, 0], np.sin(grid[:, 0]), atol=0.25)
