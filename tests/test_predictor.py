"""Predictor: the packed forward pass against fastnn.reference, its copy semantics, and its checks."""

import threading

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn.predictor import PACKED_MAX_ROWS
from fastnn._kernels import network as knet

from conftest import DTYPES, TOL

# Every activation, a one-unit output layer (the dot-product branch) and a wider one.
NETS = [
    fnn.mlp([5, 7, 1], activation=a) for a in fnn.ACTIVATIONS
] + [fnn.mlp([6, 9, 4, 3], activation="tanh", output="sigmoid")]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("net", NETS, ids=lambda n: f"{n.sizes}-{n.activations[0]}-{n.activations[-1]}")
def test_matches_reference_forward(net, dtype):
    """Predictor and fastnn.forward, on both of their paths: up to PACKED_MAX_ROWS rows row by row,
    more rows through BLAS; 0 rows; one 1-D sample."""
    params = fnn.init(net, seed=3, dtype=dtype)
    predict = fnn.Predictor(net, params)
    rng = np.random.default_rng(0)
    for rows in (0, 1, 2, PACKED_MAX_ROWS, PACKED_MAX_ROWS + 1, 33):
        x = (rng.normal(size=(rows, net.sizes[0])) * 2).astype(dtype)
        expected = ref.forward(net, params, x)
        for out in (predict(x), fnn.forward(net, params, x)):
            assert out.shape == (rows, net.sizes[-1]) and out.dtype == dtype
            np.testing.assert_allclose(out, expected, **TOL[np.dtype(dtype)])
    x1 = rng.normal(size=net.sizes[0]).astype(dtype)
    for out1 in (predict(x1), fnn.forward(net, params, x1)):
        assert out1.shape == (net.sizes[-1],) and out1.dtype == dtype
        np.testing.assert_allclose(out1, ref.forward(net, params, x1), **TOL[np.dtype(dtype)])


def test_inputs_are_converted_like_forward():
    net = NETS[-1]
    params = fnn.init(net, seed=0, dtype=np.float32)
    predict = fnn.Predictor(net, params)
    x = np.arange(12.0).reshape(2, 6) / 10
    expected = fnn.forward(net, params, x)
    for variant in (x.tolist(), np.asfortranarray(x), x.astype(np.float16), x[:, ::-1][:, ::-1]):
        np.testing.assert_allclose(predict(variant), expected, rtol=1e-3, atol=1e-6)
    # A non-contiguous 1-D sample takes the checked path and gives the same answer.
    wide = np.zeros(12, np.float32)
    wide[::2] = x[0]
    np.testing.assert_allclose(predict(wide[::2]), expected[0], rtol=1e-6)


def test_nan_propagates():
    net = fnn.mlp([3, 4, 2], activation="relu")
    predict = fnn.Predictor(net, fnn.init(net, seed=0))
    out = predict(np.array([np.nan, 0.0, 1.0], np.float32))
    assert np.isnan(out).all()


def test_params_are_copied_and_update_copies_new_values():
    net = NETS[0]
    params = fnn.init(net, seed=0, dtype=np.float64)
    predict = fnn.Predictor(net, params)
    x = np.linspace(-1, 1, 5)
    before = predict(x)
    params[0][0][...] += 1.0  # the caller's arrays change: the Predictor keeps its copy
    np.testing.assert_array_equal(predict(x), before)
    new = fnn.init(net, seed=9, dtype=np.float64)
    predict.update(new)
    np.testing.assert_allclose(predict(x), ref.forward(net, new, x), **TOL[np.dtype(np.float64)])
    copy = predict.params
    copy[0][0][...] = 0.0  # a copy: writing it changes nothing
    np.testing.assert_allclose(predict(x), ref.forward(net, new, x), **TOL[np.dtype(np.float64)])


def test_concurrent_calls_agree():
    net = fnn.mlp([16, 64, 64, 1], activation="tanh")
    params = fnn.init(net, seed=1, dtype=np.float32)
    predict = fnn.Predictor(net, params)
    xs = np.random.default_rng(0).normal(size=(4, 200, 16)).astype(np.float32)
    expected = [np.stack([predict(x) for x in chunk]) for chunk in xs]
    results = [None] * 4

    def work(k):
        results[k] = np.stack([predict(x) for x in xs[k]])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        np.testing.assert_array_equal(got, want)


# --- bad inputs: rejected before any kernel runs ---------------------------------------------------

@pytest.fixture
def no_packed_kernels(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel ran before validation rejected the input")

    for name in ("forward_packed_into", "forward_packed_row_into", "forward_into"):
        monkeypatch.setattr(knet, name, forbidden)


NET = fnn.mlp([4, 8, 3])


def test_bad_construction():
    params = fnn.init(NET, seed=0)
    with pytest.raises(TypeError, match="fastnn.Net"):
        fnn.Predictor("net", params)
    with pytest.raises(ValueError, match="shape"):
        fnn.Predictor(fnn.mlp([4, 9, 3]), params)
    with pytest.raises(TypeError, match="pair"):
        fnn.Predictor(NET, [params[0], 3])


@pytest.mark.parametrize("x, error, message", [
    (np.ones(5, np.float32), ValueError, "5 features"),
    (np.ones((2, 3)), ValueError, "3 features"),
    (np.ones((2, 2, 4)), ValueError, "1-D"),
    (np.array(["a", "b", "c", "d"]), TypeError, "real numbers"),
    ([[1, 2], [3]], ValueError, "rectangular"),
], ids=["1d-width", "2d-width", "3d", "strings", "ragged"])
def test_bad_x(no_packed_kernels, x, error, message):
    predict = fnn.Predictor(NET, fnn.init(NET, seed=0))
    with pytest.raises(error, match=message):
        predict(x)


def test_bad_update(no_packed_kernels):
    predict = fnn.Predictor(NET, fnn.init(NET, seed=0, dtype=np.float32))
    with pytest.raises(TypeError, match="made for float32"):
        predict.update(fnn.init(NET, seed=0, dtype=np.float64))
    with pytest.raises(ValueError, match="shape"):
        predict.update(fnn.init(fnn.mlp([4, 9, 3]), seed=0, dtype=np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_pickled_or_copied_predictor_takes_its_own_params_and_any_equal_dtype(dtype):
    """Unpickled arrays carry dtype objects equal to NumPy's but not the same object: a pickled or
    deep-copied Predictor, and one made from unpickled params, accept params of either kind and
    predict as the original does."""
    import copy
    import pickle
    net = fnn.mlp([4, 6, 2], activation="tanh")
    params = fnn.init(net, seed=1, dtype=dtype)
    unpickled = pickle.loads(pickle.dumps(params))
    assert unpickled[0][0].dtype is not np.dtype(dtype)  # what this test is about
    original = fnn.Predictor(net, params)
    x = np.random.default_rng(0).normal(size=4).astype(dtype)
    for predict in (pickle.loads(pickle.dumps(original)), copy.deepcopy(original), fnn.Predictor(net, unpickled)):
        for new in (params, unpickled, predict.params):
            predict.update(new)
            np.testing.assert_array_equal(predict(x), original(x))
            np.testing.assert_array_equal(predict(pickle.loads(pickle.dumps(x))), original(x))
