"""fastnn/_entry.py: kernels called through a signature's entry point. Once the Predictor and the
fused train step have found one, arguments of other types (another dtype, read-only, strided,
Fortran-ordered) must still take the typed call or the checked way: same results, or the same
errors, never the entry point reading them as the wrong type."""

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn import _entry, training
from fastnn._kernels import network as knet

from conftest import TOL


def _variants(x):
    """x as a read-only array, a strided view and a Fortran-ordered copy (same values)."""
    read_only = x.copy()
    read_only.flags.writeable = False
    wide = np.zeros((x.shape[0], 2 * x.shape[1]) if x.ndim == 2 else 2 * x.shape[0], x.dtype)
    strided = wide[:, ::2] if x.ndim == 2 else wide[::2]
    strided[...] = x
    return {"read-only": read_only, "strided": strided, "fortran": np.asfortranarray(x)}


def _plain(a):
    return (a.flags.num & _entry.PLAIN_FLAGS) == _entry.PLAIN_FLAGS


def test_plain_flags_say_which_arrays_numba_types_as_plain():
    x = np.zeros((3, 4), np.float32)
    assert _plain(x)
    assert not _plain(x[:, ::2]) and not _plain(np.asfortranarray(x))
    x.flags.writeable = False
    assert not _plain(x)


def test_entry_point_is_the_kernel_itself_without_a_compiled_signature():
    flat, layout = np.zeros(4, np.float32), np.zeros((1, 5), np.int64)
    args = (flat, layout, np.zeros(2, np.float32), np.zeros(2, np.float32))
    knet.forward_packed_row_into(*args)  # compiled for plain float32 arrays
    assert _entry.entry_point(knet.forward_packed_row_into, args) is not knet.forward_packed_row_into
    odd = (flat, layout, np.zeros(4, np.float32)[::2], np.zeros(2, np.float32))  # a strided x: not compiled
    assert _entry.entry_point(knet.forward_packed_row_into, odd) is knet.forward_packed_row_into


def test_predictor_after_its_entry_point_takes_other_samples_the_checked_way():
    net = fnn.mlp([5, 7, 2], activation="tanh")
    params = fnn.init(net, seed=1)
    predict = fnn.Predictor(net, params)
    rng = np.random.default_rng(0)
    x = rng.normal(size=5).astype(np.float32)
    for _ in range(2):  # the first call finds the entry point, the second runs through it
        np.testing.assert_allclose(predict(x), ref.forward(net, params, x), **TOL[np.dtype(np.float32)])
    assert predict._one is not None
    for name, other in _variants(x).items():
        np.testing.assert_allclose(predict(other), ref.forward(net, params, x), **TOL[np.dtype(np.float32)],
                                   err_msg=name)
    as_float64 = predict(x.astype(np.float64))  # converted by the checked way, not read as float32
    assert as_float64.dtype == np.float32
    np.testing.assert_allclose(as_float64, ref.forward(net, params, x), **TOL[np.dtype(np.float32)])
    with pytest.raises(ValueError):
        predict(np.zeros(6, np.float32))


@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_train_step_after_its_entry_point_gives_other_batches_the_same_step(loss):
    net = fnn.mlp([6, 8, 3], activation="relu")
    opt = fnn.adam(lr=1e-2)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=10) if loss == "softmax_cross_entropy" else rng.normal(size=(10, 3)).astype(np.float32)
    params = fnn.init(net, seed=0)
    state = fnn.init_state(opt, params)
    for _ in range(3):  # on its own results: the entry point is found, then used
        params, state, _ = fnn.train_step(net, opt, params, state, x, y, loss=loss)
    sets = training._LastStep._make(net._last_step).sets
    assert sets.entries.get(loss == "softmax_cross_entropy") not in (None, training._fused_step)
    expected = fnn.train_step(net, opt, params, state, x, y, loss=loss)
    cases = [("x " + k, v, y) for k, v in _variants(x).items()] + [("targets " + k, x, v) for k, v in _variants(y).items()]
    cases.append(("x float64", x.astype(np.float64), y))  # converted by the checked way
    for name, xx, yy in cases:
        got = fnn.train_step(net, opt, params, state, xx, yy, loss=loss)
        assert got[2] == expected[2], name
        for (W, b), (W_e, b_e) in zip(got[0], expected[0]):
            np.testing.assert_array_equal(W, W_e, err_msg=name)
            np.testing.assert_array_equal(b, b_e, err_msg=name)
