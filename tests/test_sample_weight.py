"""Sample weights: the loss sum_i w_i l_i / sum_i w_i computed in the kernels, against the
reference (which scales each row's gradient in NumPy), against repeated rows, and at the boundary."""

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn import _threads

from conftest import DTYPES, LOSS_CASES, assert_tree_close, make_targets

NET = fnn.mlp([5, 12, 3], activation="tanh")
ROWS = 23


def _batch(kind, seed=0, rows=ROWS):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5))
    y = make_targets(kind, rows, 3, rng)
    weights = rng.integers(0, 4, size=rows).astype(np.float64)
    weights[0] = 0.0  # at least one zero weight
    weights[1] = 3.0  # and one positive
    return x, y, weights


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss,kind", LOSS_CASES)
def test_weighted_grad_matches_the_reference(kernel_path, small_blocks, loss, kind, dtype):
    x, y, w = _batch(kind)
    params = fnn.init(NET, seed=1, dtype=dtype)
    value, grads = fnn.grad(NET, params, x, y, loss, sample_weight=w)
    expected_value, expected = ref.grad(NET, params, x, y, loss, sample_weight=w)
    assert value == pytest.approx(expected_value, rel=1e-5 if dtype == np.float32 else 1e-12)
    assert_tree_close(grads, expected, dtype)
    unweighted, _ = fnn.grad(NET, params, x, y, loss)
    assert abs(unweighted - value) > 1e-4  # the weights changed the loss


@pytest.mark.parametrize("loss,kind", LOSS_CASES)
def test_integer_weights_equal_repeated_rows(kernel_path, loss, kind):
    x, y, w = _batch(kind, seed=3)
    params = fnn.init(NET, seed=2, dtype=np.float64)
    rows = np.repeat(np.arange(ROWS), w.astype(int))
    for impl in (fnn, ref):
        value, grads = impl.grad(NET, params, x, y, loss, sample_weight=w)
        repeated_value, repeated = impl.grad(NET, params, x[rows], y[rows], loss)
        assert value == pytest.approx(repeated_value, rel=1e-13)
        assert_tree_close(grads, repeated, np.float64, rtol=1e-11, atol=1e-14)


def test_rows_of_zero_weight_count_for_nothing(kernel_path):
    x, y, w = _batch("labels", seed=4)
    params = fnn.init(NET, seed=2, dtype=np.float64)
    other_x, other_y = x.copy(), y.copy()
    zero = w == 0
    other_x[zero] = 100.0
    other_y[zero] = (y[zero] + 1) % 3
    value, grads = fnn.grad(NET, params, x, y, "softmax_cross_entropy", sample_weight=w)
    same_value, same = fnn.grad(NET, params, other_x, other_y, "softmax_cross_entropy", sample_weight=w)
    assert value == same_value
    assert_tree_close(grads, same, np.float64, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_equal_weights_give_the_unweighted_mean(dtype):
    x, y, _ = _batch("dense", seed=5)
    params = fnn.init(NET, seed=2, dtype=dtype)
    value, grads = fnn.grad(NET, params, x, y, "mse", sample_weight=np.full(ROWS, 2.5))
    expected_value, expected = fnn.grad(NET, params, x, y, "mse")
    assert value == pytest.approx(expected_value, rel=1e-6)
    assert_tree_close(grads, expected, dtype)


@pytest.mark.parametrize("loss,kind", [("mse", "dense"), ("softmax_cross_entropy", "labels")])
def test_weighted_train_step_matches_the_reference(kernel_path, loss, kind):
    x, y, w = _batch(kind, seed=6)
    params = fnn.init(NET, seed=2, dtype=np.float64)
    opt = fnn.adam(1e-2)
    state = fnn.init_state(opt, params)
    got = fnn.train_step(NET, opt, params, state, x, y, loss, sample_weight=w)
    expected = ref.train_step(NET, opt, params, state, x, y, loss, sample_weight=w)
    assert got[2] == pytest.approx(expected[2], rel=1e-12)
    assert_tree_close(got[0], expected[0], np.float64)
    plain = fnn.train_step(NET, opt, params, state, x, y, loss)
    assert not np.allclose(plain[0][0][0], got[0][0][0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_weighted_fit_matches_the_reference_with_a_weighted_validation_loss(kernel_path, dtype):
    x, y, w = _batch("labels", seed=7, rows=90)
    params = fnn.init(NET, seed=2, dtype=dtype)
    kw = dict(loss="softmax_cross_entropy", epochs=3, batch_size=16, validation_split=0.25, split="shuffled",
              sample_weight=w, optimizer=fnn.adam(1e-2), progress=False, seed=3)
    got, history = fnn.fit(NET, params, x, y, **kw)
    expected, ref_history = ref.fit(NET, params, x, y, **kw)
    assert_tree_close(got, expected, dtype)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=tol)
    np.testing.assert_allclose(history["val_loss"], ref_history["val_loss"], rtol=tol)
    unweighted = fnn.fit(NET, params, x, y, **dict(kw, sample_weight=None))[1]
    assert abs(unweighted["val_loss"][0] - history["val_loss"][0]) > 1e-6


def test_fit_leaves_rows_of_zero_weight_out():
    x, y, w = _batch("labels", seed=8, rows=60)
    params = fnn.init(NET, seed=2)
    kw = dict(loss="softmax_cross_entropy", epochs=2, batch_size=8, progress=False, seed=1)
    got, history = fnn.fit(NET, params, x, y, sample_weight=w, **kw)
    kept = w > 0
    expected, expected_history = fnn.fit(NET, params, x[kept], y[kept], sample_weight=w[kept], **kw)
    assert_tree_close(got, expected, np.float32, rtol=0, atol=0)
    assert history["loss"] == expected_history["loss"]


def test_weighted_validation_data_takes_a_third_array():
    x, y, w = _batch("dense", seed=9, rows=40)
    params = fnn.init(NET, seed=2)
    kw = dict(loss="mse", epochs=1, progress=False)
    _, weighted = fnn.fit(NET, params, x[:30], y[:30], validation_data=(x[30:], y[30:], w[30:]), **kw)
    _, plain = fnn.fit(NET, params, x[:30], y[:30], validation_data=(x[30:], y[30:]), **kw)
    kept = w[30:] > 0
    _, only_kept = fnn.fit(NET, params, x[:30], y[:30], validation_data=(x[30:][kept], y[30:][kept], w[30:][kept]),
                           **kw)
    assert weighted["val_loss"] == pytest.approx(only_kept["val_loss"], rel=1e-6)
    assert weighted["val_loss"] != plain["val_loss"]


@pytest.fixture
def split_everything(monkeypatch):
    before = fnn.get_num_threads()["numba"]
    fnn.set_num_threads(2)
    monkeypatch.setattr(_threads, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(_threads, "SPLIT_MIN_ROWS", 1)
    yield
    fnn.set_num_threads(before)


def test_a_weighted_batch_split_over_two_threads_matches_the_reference(split_everything):
    x, y, w = _batch("dense", seed=10)
    w[: ROWS // 2] *= 5  # halves of unequal weight
    params = fnn.init(NET, seed=2, dtype=np.float64)
    value, grads = fnn.grad(NET, params, x, y, "mse", sample_weight=w)
    expected_value, expected = ref.grad(NET, params, x, y, "mse", sample_weight=w)
    assert value == pytest.approx(expected_value, rel=1e-12)
    assert_tree_close(grads, expected, np.float64)
    kw = dict(loss="mse", epochs=2, batch_size=8, sample_weight=w, progress=False)
    got, history = fnn.fit(NET, params, x, y, **kw)
    want, ref_history = ref.fit(NET, params, x, y, **kw)
    assert_tree_close(got, want, np.float64)
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-12)


def test_weighted_lbfgs_matches_the_reference(kernel_path):
    x, y, w = _batch("dense", seed=11)
    params = fnn.init(NET, seed=2, dtype=np.float64)
    kw = dict(loss="mse", max_iter=15, sample_weight=w)
    got, history = fnn.fit_lbfgs(NET, params, x, y, **kw)
    expected, ref_history = ref.fit_lbfgs(NET, params, x, y, **kw)
    np.testing.assert_allclose(history["loss"], ref_history["loss"], rtol=1e-8)
    unweighted = fnn.fit_lbfgs(NET, params, x, y, **dict(kw, sample_weight=None))[1]
    assert unweighted["loss"][0] != pytest.approx(history["loss"][0], rel=1e-3)


BAD_WEIGHTS = [
    (np.zeros(ROWS), ValueError, "zero for every sample"),
    (np.r_[np.nan, np.ones(ROWS - 1)], ValueError, "finite"),
    (np.r_[np.inf, np.ones(ROWS - 1)], ValueError, "finite"),
    (np.r_[-1.0, np.ones(ROWS - 1)], ValueError, ">= 0; got a weight of -1.0"),
    (np.ones(ROWS - 1), ValueError, rf"shape \({ROWS},\)"),
    (np.ones((ROWS, 1)), ValueError, rf"shape \({ROWS},\)"),
    (np.array(["a"] * ROWS), TypeError, "real numbers"),
]


@pytest.mark.parametrize("weights,error,message", BAD_WEIGHTS)
def test_bad_weights_are_refused_before_any_kernel_runs(impl, weights, error, message):
    x, y, _ = _batch("dense")
    params = fnn.init(NET, seed=0)
    opt = fnn.sgd(0.1)
    with pytest.raises(error, match=message):
        impl.grad(NET, params, x, y, "mse", sample_weight=weights)
    with pytest.raises(error, match=message):
        impl.train_step(NET, opt, params, fnn.init_state(opt, params), x, y, "mse", sample_weight=weights)
    with pytest.raises(error, match=message):
        impl.fit(NET, params, x, y, "mse", epochs=1, sample_weight=weights, progress=False)
    with pytest.raises(error, match=message):
        impl.fit_lbfgs(NET, params, x, y, "mse", max_iter=1, sample_weight=weights)


def test_one_sample_takes_a_number_for_its_weight():
    x, y, _ = _batch("dense")
    params = fnn.init(NET, seed=0, dtype=np.float64)
    value, grads = fnn.grad(NET, params, x[0], y[0], "mse", sample_weight=2.0)
    expected_value, expected = fnn.grad(NET, params, x[0], y[0], "mse")
    assert value == pytest.approx(expected_value, rel=1e-15)
    assert_tree_close(grads, expected, np.float64)
