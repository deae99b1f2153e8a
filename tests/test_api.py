"""Behaviour at the boundary: purity, determinism, dtypes, shapes and the inputs that must work."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from conftest import DTYPES, TOL, assert_tree_close, assert_tree_dtype, flat

NET = fnn.mlp([4, 8, 3], activation="tanh")


def _data(batch=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, 4)), rng.integers(0, 3, size=batch)


# --- Net, mlp, init ------------------------------------------------------------------------------

def test_net_is_immutable_hashable_and_normalises_lists():
    net = fnn.Net(sizes=[4, 8, 3], activations=["tanh", "identity"])
    assert net == NET and hash(net) == hash(NET)
    assert net.sizes == (4, 8, 3) and net.activations == ("tanh", "identity")
    with pytest.raises(AttributeError):
        net.sizes = (1, 2)


def test_net_unpickled_in_another_process_hashes_like_its_own_nets():
    """Net caches its hash; the cache must not travel in a pickle (string hashes are per process)."""
    hash(NET)
    code = ("import pickle, sys, fastnn as fnn\n"
            "net = pickle.loads(sys.stdin.buffer.read())\n"
            "fresh = fnn.Net(sizes=(4, 8, 3), activations=('tanh', 'identity'))\n"
            "assert hash(net) == hash(fresh) and {fresh: 1}[net] == 1\n")
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        result = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(NET), env=env, capture_output=True)
        assert result.returncode == 0, result.stderr.decode()


def test_mlp_puts_output_activation_last():
    net = fnn.mlp([2, 3, 4, 5], activation="relu", output="sigmoid")
    assert net.activations == ("relu", "relu", "sigmoid")
    assert fnn.mlp([2, 5]).activations == ("identity",)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_init_shapes_dtype_contiguity_and_seed(dtype):
    params = fnn.init(NET, seed=3, dtype=dtype)
    assert [(W.shape, b.shape) for W, b in params] == [((4, 8), (8,)), ((8, 3), (3,))]
    assert_tree_dtype(params, dtype)
    assert all(a.flags.c_contiguous for a in flat(params))
    again = fnn.init(NET, seed=3, dtype=dtype)
    assert all(np.array_equal(a, b) for a, b in zip(flat(params), flat(again)))
    other = fnn.init(NET, seed=4, dtype=dtype)
    assert not np.array_equal(params[0][0], other[0][0])
    assert all(np.all(b == 0) for _, b in params)


def test_init_float32_is_the_rounded_float64_draw_and_accepts_a_generator():
    p32 = fnn.init(NET, seed=7, dtype=np.float32)
    p64 = fnn.init(NET, seed=7, dtype=np.float64)
    assert all(np.array_equal(a, b.astype(np.float32)) for a, b in zip(flat(p32), flat(p64)))
    from_gen = fnn.init(NET, seed=np.random.default_rng(7), dtype=np.float64)
    assert all(np.array_equal(a, b) for a, b in zip(flat(from_gen), flat(p64)))


@pytest.mark.parametrize("scheme,activation,expected_std", [
    ("auto", "relu", np.sqrt(2 / 400)),                 # he_normal
    ("auto", "tanh", np.sqrt(6 / 800) / np.sqrt(3)),    # glorot_uniform: std = limit / sqrt(3)
    ("he_uniform", "tanh", np.sqrt(6 / 400) / np.sqrt(3)),
    ("glorot_normal", "relu", np.sqrt(2 / 800)),
    ("lecun_normal", "relu", np.sqrt(1 / 400)),
])
def test_init_scale_follows_the_scheme(scheme, activation, expected_std):
    net = fnn.Net(sizes=(400, 400), activations=(activation,))
    W = fnn.init(net, seed=0, dtype=np.float64, init=scheme)[0][0]
    assert W.std() == pytest.approx(expected_std, rel=0.02)
    assert abs(W.mean()) < expected_std * 0.02


# --- purity and determinism ----------------------------------------------------------------------

def _snapshot(*trees):
    return [a.copy() for t in trees for a in flat(t)]


def test_no_public_function_mutates_its_arguments(impl):
    params = fnn.init(NET, seed=0, dtype=np.float64)
    x, y = _data()
    opt = fnn.adam(1e-2)
    state = fnn.init_state(opt, params)
    state = fnn.step(opt, params, fnn.grad(NET, params, x, y, "softmax_cross_entropy")[1], state)[1]
    dy = np.ones((5, 3))
    before = _snapshot(params, state.exp_avg, state.exp_avg_sq) + [x.copy(), y.copy(), dy.copy()]
    impl.forward(NET, params, x)
    _, grads = impl.grad(NET, params, x, y, loss="softmax_cross_entropy")
    impl.backward(NET, params, x, dy)
    grads_before = _snapshot(grads)
    impl.step(opt, params, grads, state)
    impl.train_step(NET, opt, params, state, x, y, loss="softmax_cross_entropy")
    after = _snapshot(params, state.exp_avg, state.exp_avg_sq) + [x, y, dy]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert all(np.array_equal(a, b) for a, b in zip(grads_before, _snapshot(grads)))
    assert state.count == 1


def test_outputs_never_alias_inputs():
    params = fnn.init(NET, seed=0, dtype=np.float64)
    x, y = _data()
    opt = fnn.sgd(0.1)
    new_params, _, _ = fnn.train_step(NET, opt, params, fnn.init_state(opt, params), x, y, "softmax_cross_entropy")
    assert not any(np.shares_memory(a, b) for a in flat(new_params) for b in flat(params))
    out = fnn.forward(NET, params, x)
    assert not np.shares_memory(out, x)


def test_same_inputs_give_bitwise_identical_outputs():
    params = fnn.init(NET, seed=0, dtype=np.float32)
    x, y = _data(32)
    opt = fnn.adam(1e-2)
    runs = []
    for _ in range(2):
        p, s = params, fnn.init_state(opt, params)
        for _ in range(3):
            p, s, loss = fnn.train_step(NET, opt, p, s, x, y, "softmax_cross_entropy")
        runs.append((flat(p), loss))
    assert runs[0][1] == runs[1][1]
    assert all(np.array_equal(a, b) for a, b in zip(runs[0][0], runs[1][0]))


# --- dtypes --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("data_dtype", [np.float64, np.float32, np.int64, np.bool_])
def test_outputs_take_the_params_dtype_whatever_the_data(impl, dtype, data_dtype):
    params = fnn.init(NET, seed=0, dtype=dtype)
    x = np.arange(20).reshape(5, 4).astype(data_dtype)
    y = np.ones((5, 3), dtype=data_dtype)
    assert impl.forward(NET, params, x).dtype == np.dtype(dtype)
    value, grads = impl.grad(NET, params, x, y, loss="mse")
    assert isinstance(value, float)
    assert_tree_dtype(grads, dtype)
    grads, dx = impl.backward(NET, params, x, y)
    assert dx.dtype == np.dtype(dtype)
    opt = fnn.adam()
    new_params, state, _ = impl.train_step(NET, opt, params, fnn.init_state(opt, params), x, y)
    assert_tree_dtype(new_params, dtype)
    assert_tree_dtype(state.exp_avg + state.exp_avg_sq, dtype)


# --- inputs that must work -----------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_array_likes_and_layouts_give_the_same_result(dtype):
    params = fnn.init(NET, seed=0, dtype=dtype)
    x, _ = _data()
    expected = fnn.forward(NET, params, x)
    np.testing.assert_allclose(expected, ref.forward(NET, params, x), **TOL[np.dtype(dtype)])
    readonly = x.copy()
    readonly.flags.writeable = False
    wide = np.zeros((5, 8))
    wide[:, ::2] = x
    variants = {
        "list": x.tolist(),
        "fortran": np.asfortranarray(x),
        "strided": wide[:, ::2],
        "readonly": readonly,
        "float32": x.astype(np.float32),
    }
    for name, variant in variants.items():
        got = fnn.forward(NET, params, variant)
        tol = dict(rtol=1e-6, atol=1e-6) if name == "float32" and dtype == np.float64 else dict(rtol=0, atol=0)
        np.testing.assert_allclose(got, expected, err_msg=name, **tol)


def test_readonly_and_noncontiguous_params_work():
    params = fnn.init(NET, seed=0, dtype=np.float64)
    frozen = []
    for W, b in params:
        W_f = np.asfortranarray(W)
        b_ro = b.copy()
        b_ro.flags.writeable = False
        frozen.append((W_f, b_ro))
    x, y = _data()
    np.testing.assert_array_equal(fnn.forward(NET, tuple(frozen), x), fnn.forward(NET, params, x))
    assert fnn.grad(NET, frozen, x, y, "softmax_cross_entropy")[0] == fnn.grad(NET, params, x, y,
                                                                              "softmax_cross_entropy")[0]


def test_one_sample_gives_one_output(impl):
    params = fnn.init(NET, seed=0, dtype=np.float64)
    x, y = _data()
    y1 = impl.forward(NET, params, x[0])
    assert y1.shape == (3,)
    np.testing.assert_allclose(y1, impl.forward(NET, params, x)[0], rtol=1e-12)
    value, grads = impl.grad(NET, params, x[0], y[0], loss="softmax_cross_entropy")
    value_b, grads_b = impl.grad(NET, params, x[:1], y[:1], loss="softmax_cross_entropy")
    assert value == pytest.approx(value_b, rel=1e-12)
    assert_tree_close(grads, grads_b, np.float64)
    _, dx = impl.backward(NET, params, x[0], np.ones(3))
    assert dx.shape == (4,)


def test_scalar_regression_targets_may_be_one_dimensional(impl):
    net = fnn.mlp([4, 6, 1])
    params = fnn.init(net, seed=0, dtype=np.float64)
    x, _ = _data()
    y = np.arange(5.0)
    assert impl.grad(net, params, x, y)[0] == impl.grad(net, params, x, y[:, None])[0]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_empty_batch(impl, dtype):
    params = fnn.init(NET, seed=0, dtype=dtype)
    x = np.zeros((0, 4))
    out = impl.forward(NET, params, x)
    assert out.shape == (0, 3) and out.dtype == np.dtype(dtype)
    for loss, y in [("mse", np.zeros((0, 3))), ("softmax_cross_entropy", np.zeros(0, dtype=int))]:
        value, grads = impl.grad(NET, params, x, y, loss=loss)
        assert value == 0.0
        assert all(np.all(a == 0) for a in flat(grads))
    grads, dx = impl.backward(NET, params, x, np.zeros((0, 3)))
    assert dx.shape == (0, 4) and all(np.all(a == 0) for a in flat(grads))
    opt = fnn.sgd(0.1)
    new_params, state, value = impl.train_step(NET, opt, params, fnn.init_state(opt, params), x, np.zeros((0, 3)))
    assert value == 0.0 and state.count == 1
    assert all(np.array_equal(a, b) for a, b in zip(flat(new_params), flat(params)))


@pytest.mark.parametrize("activation", fnn.ACTIVATIONS)
def test_nan_input_propagates_to_its_own_row_only(impl, activation):
    net = fnn.Net(sizes=(4, 8, 3), activations=(activation, activation))
    params = fnn.init(net, seed=0, dtype=np.float64)
    x, y = _data()
    x[1, 2] = np.nan
    out = impl.forward(net, params, x)
    assert np.all(np.isnan(out[1]))
    assert np.all(np.isfinite(np.delete(out, 1, axis=0)))
    value, grads = impl.grad(net, params, x, y, loss="softmax_cross_entropy")
    assert np.isnan(value)
    assert len(flat(grads)) == 4  # no crash; NaN reaches the gradients through row 1


def test_nan_target_gives_nan_loss(impl):
    params = fnn.init(NET, seed=0, dtype=np.float64)
    x, _ = _data()
    y = np.zeros((5, 3))
    y[0, 0] = np.nan
    for loss in ("mse", "mae", "huber", "sigmoid_cross_entropy", "softmax_cross_entropy"):
        assert np.isnan(impl.grad(NET, params, x, y, loss=loss)[0]), loss


def test_float_labels_with_integral_values_are_accepted(impl):
    params = fnn.init(NET, seed=0, dtype=np.float64)
    x, y = _data()
    assert impl.grad(NET, params, x, y.astype(float), "softmax_cross_entropy")[0] == \
        impl.grad(NET, params, x, y, "softmax_cross_entropy")[0]


def test_results_never_share_memory_with_later_calls_or_other_threads():
    """Scratch buffers are reused between calls; nothing returned may be one of them."""
    from concurrent.futures import ThreadPoolExecutor

    net = fnn.mlp([3, 8, 2], activation="tanh")
    params = fnn.init(net, seed=0)
    opt = fnn.adam(1e-2)
    state = fnn.init_state(opt, params)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(6, 3)), rng.normal(size=(6, 2))) for _ in range(8)]
    first = [fnn.train_step(net, opt, params, state, x, y) for x, y in batches]
    grads = [fnn.grad(net, params, x, y)[1] for x, y in batches]
    vjps = [fnn.backward(net, params, x, y) for x, y in batches]
    expected = [ref.train_step(net, opt, params, state, x, y) for x, y in batches]
    for (p, s, loss), (rp, rs, rloss) in zip(first, expected):
        assert_tree_close(p, rp, np.float32)
        assert loss == pytest.approx(rloss, rel=1e-5)
    assert_tree_close(grads[0], ref.grad(net, params, *batches[0])[1], np.float32)
    assert_tree_close(vjps[0][0], ref.backward(net, params, *batches[0])[0], np.float32)
    with ThreadPoolExecutor(4) as pool:
        again = list(pool.map(lambda xy: fnn.train_step(net, opt, params, state, *xy), batches * 8))
    for (p, _, loss), (q, _, loss2) in zip(first * 8, again):
        assert loss == loss2
        assert_tree_close(q, p, np.float32, rtol=0, atol=0)
