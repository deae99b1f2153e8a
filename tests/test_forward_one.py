"""forward on one sample: the path that hands unchecked arguments to the shape-checking row kernel.

``forward`` passes a 1-D x straight to ``kernels.network.forward_rows_checked_into`` once that kernel
is compiled; the call checks the types (``kernels._config.call_compiling``) and the kernel the
shapes. These tests check both guards, and that every input the fast path turns away still gets
the checked path's result or error.
"""

import pickle

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn import _checks, _codes, network as model
from fastnn._kernels import network as knet
from fastnn._kernels._config import call_compiling

from conftest import DTYPES, TOL

NET = fnn.mlp([5, 7, 6, 3], activation="tanh", output="identity")


def _ready(dtype):
    """Params, a sample and the reference output, with the one-sample path compiled for dtype."""
    params = fnn.init(NET, seed=1, dtype=dtype)
    x = np.random.default_rng(2).normal(size=NET.sizes[0]).astype(dtype)
    fnn.forward(NET, params, x)
    return params, x, ref.forward(NET, params, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_one_sample_and_few_rows_skip_the_python_checks_once_compiled(monkeypatch, dtype):
    params, x, expected = _ready(dtype)
    rows = np.random.default_rng(3).normal(size=(model.ROWS_WITHOUT_BLAS + 1, NET.sizes[0])).astype(dtype)
    fnn.forward(NET, params, rows[:2])  # compiles the 2-D variant
    counts = (0, 1, model.ROWS_WITHOUT_BLAS)
    expected_rows = [ref.forward(NET, params, rows[:n]) for n in counts]  # the reference checks too

    def no_checks(*args, **kwargs):
        raise AssertionError("the unchecked path ran the Python checks")

    monkeypatch.setattr(_checks, "check_params", no_checks)
    out = fnn.forward(NET, params, x)
    assert out.shape == (NET.sizes[-1],) and out.dtype == dtype
    np.testing.assert_allclose(out, expected, **TOL[np.dtype(dtype)])
    for n, want in zip(counts, expected_rows):
        out = fnn.forward(NET, params, rows[:n])
        assert out.shape == (n, NET.sizes[-1]) and out.dtype == dtype
        np.testing.assert_allclose(out, want, **TOL[np.dtype(dtype)])
    with pytest.raises(AssertionError, match="unchecked path ran the Python checks"):
        fnn.forward(NET, params, rows)  # more rows: BLAS, after the checks


def _other_net_params(sizes, dtype):
    return fnn.init(fnn.mlp(sizes, activation="tanh"), seed=0, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sizes, message", [
    ([5, 8, 6, 3], r"params\[0\] W has shape \(5, 8\)"),   # same depth and dtype: only the kernel sees it
    ([5, 7, 6, 4], r"params\[2\] W has shape \(6, 4\)"),
    ([5, 7, 3], r"2 layers"),                                # another depth: another type
])
def test_params_of_another_net_raise_the_checked_error(dtype, sizes, message):
    _ready(dtype)
    x = np.ones(NET.sizes[0], dtype=dtype)
    with pytest.raises(ValueError, match=message):
        fnn.forward(NET, _other_net_params(sizes, dtype), x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_of_the_wrong_length_and_wrong_x_width_raise(dtype):
    params, x, _ = _ready(dtype)
    short_b = ((params[0][0], params[0][1][:-1]),) + params[1:]
    with pytest.raises(ValueError, match=r"params\[0\] b has shape \(6,\)"):
        fnn.forward(NET, short_b, x)
    with pytest.raises(ValueError, match="x has 4 features"):
        fnn.forward(NET, params, x[:4].copy())


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_the_fast_path_turns_away_are_converted(dtype):
    """Another dtype, a strided or read-only x, params in lists or read-only: the same output."""
    params, x, expected = _ready(dtype)
    other = np.float64 if dtype == np.float32 else np.float32
    strided = np.repeat(x, 2)[::2]
    cases = {
        "x of another dtype": (params, x.astype(other)),
        "strided x": (params, strided),
        "read-only x": (params, _read_only(x)),
        "x as a list": (params, x.tolist()),
        "params in lists": ([list(layer) for layer in params], x),
        "read-only params": (tuple((_read_only(W), _read_only(b)) for W, b in params), x),
        "one read-only bias": (((params[0][0], _read_only(params[0][1])),) + params[1:], x),
    }
    assert not strided.flags.c_contiguous
    for name, (p, xin) in cases.items():
        out = fnn.forward(NET, p, xin)
        assert out.dtype == dtype, name
        # float32 x for float64 params is another input: float32 cannot hold x's float64 digits.
        want = ref.forward(NET, params, np.asarray(xin, dtype=dtype)) if name == "x of another dtype" else expected
        np.testing.assert_allclose(out, want, **TOL[np.dtype(dtype)], err_msg=name)


def test_mixed_dtypes_and_bad_structures_raise_as_before():
    params, x, _ = _ready(np.float32)
    mixed = params[:2] + ((params[2][0].astype(np.float64), params[2][1]),)
    with pytest.raises(TypeError, match="mixes dtypes"):
        fnn.forward(NET, mixed, x)
    with pytest.raises(TypeError, match=r"params\[0\] must be a \(W, b\) pair"):
        fnn.forward(NET, ((params[0][0],),) + params[1:], x)
    with pytest.raises(TypeError, match="fastnn.Net"):
        fnn.forward(NET.sizes, params, x)


def _kernel_args(dtype):
    params = fnn.init(NET, seed=1, dtype=dtype)
    layout = _codes.row_layout(NET, np.dtype(dtype))[0]
    return params, layout


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_kernel_refuses_every_shape_mismatch_and_writes_nothing(dtype):
    """The kernel's own check, called directly: False and out untouched for each mismatch."""
    params, layout = _kernel_args(dtype)
    (W0, b0), (W1, b1), (W2, b2) = params
    x, out = np.ones(5, dtype), np.full(3, 7.0, dtype)
    assert call_compiling(knet.forward_rows_checked_into, params, layout, x, out)
    np.testing.assert_allclose(out, ref.forward(NET, params, x), **TOL[np.dtype(dtype)])
    ones = lambda *shape: np.ones(shape, dtype)  # noqa: E731
    bad = {
        "W0 rows": (((ones(4, 7), b0), (W1, b1), (W2, b2)), layout, x, 3),
        "W1 columns": (((W0, b0), (W1[:, :5].copy(), b1), (W2, b2)), layout, x, 3),
        "W2 rows": (((W0, b0), (W1, b1), (ones(5, 3), b2)), layout, x, 3),
        "b1 length": (((W0, b0), (W1, ones(5)), (W2, b2)), layout, x, 3),
        "b2 length": (((W0, b0), (W1, b1), (W2, ones(4))), layout, x, 3),
        "x width": (params, layout, ones(6), 3),
        "out width": (params, layout, x, 4),
        "layout of another depth": (params, np.array([5, 7, 3, 5, 0], np.int64), x, 3),
    }
    for name, (p, lay, xin, n_out) in bad.items():
        out = np.full(n_out, 7.0, dtype)
        assert not call_compiling(knet.forward_rows_checked_into, p, lay, xin, out), name
        assert (out == 7.0).all(), name
    rows_out = np.full((3, 3), 7.0, dtype)
    assert not call_compiling(knet.forward_rows_checked_into, params, layout, ones(2, 5), rows_out)
    assert (rows_out == 7.0).all()


def test_a_kernel_compiled_through_call_compiling_refuses_new_types_without_compiling():
    params, layout = _kernel_args(np.float32)
    kernel = knet.forward_rows_checked_into
    call_compiling(kernel, params, layout, np.ones(5, np.float32), np.empty(3, np.float32))
    compiled = len(kernel.signatures)
    with pytest.raises(TypeError, match="No matching definition"):
        kernel(params, layout, np.ones(5, np.float16), np.empty(3, np.float16))
    with pytest.raises(TypeError, match="No matching definition"):
        kernel(params, layout, _read_only(np.ones(5, np.float32)), np.empty(3, np.float32))
    assert len(kernel.signatures) == compiled


def test_row_layout_is_cached_on_the_net_and_not_pickled():
    net = fnn.mlp([3, 4, 2], activation="relu", output="sigmoid")
    layout, n_out, kernel = _codes.row_layout(net, np.dtype(np.float32))
    assert layout.tolist() == [3, 4, 2] + _codes.activation_codes(net, np.dtype(np.float32)).tolist() and n_out == 2
    assert kernel is knet.forward_rows_checked_into
    assert _codes.row_layout(net, np.dtype(np.float64))[0] is layout
    assert net._forms_ready == {np.dtype(np.float32), np.dtype(np.float64)}
    clone = pickle.loads(pickle.dumps(net))
    assert clone == net and "_row_layout" not in clone.__dict__ and "_forms_ready" not in clone.__dict__


@pytest.mark.parametrize("dtype", DTYPES)
def test_nets_from_rows_gil_max_weights_up_release_the_gil(dtype):
    """The same kernel body compiled twice; a net just past the bound takes the GIL-releasing one."""
    width = _codes.ROWS_GIL_MAX_WEIGHTS // 16
    small, large = fnn.mlp([8, width - 1, 8], activation="tanh"), fnn.mlp([8, width, 8], activation="tanh")
    assert _codes.row_layout(small, np.dtype(dtype))[2] is knet.forward_rows_checked_into
    assert _codes.row_layout(large, np.dtype(dtype))[2] is knet.forward_rows_checked_nogil_into
    for net in (small, large):
        params = fnn.init(net, seed=0, dtype=dtype)
        x = np.random.default_rng(1).normal(size=(3, 8)).astype(dtype)
        for xin in (x[0], x):
            np.testing.assert_allclose(fnn.forward(net, params, xin), ref.forward(net, params, xin),
                                       **TOL[np.dtype(dtype)])
    assert any(np.dtype(dtype).name in str(sig) for sig in knet.forward_rows_checked_nogil_into.signatures)
