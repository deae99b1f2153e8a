"""kernels/fused.py: the fused, register-tiled train step against the NumPy reference, at widths
and batch sizes that are not multiples of the vector width or the tile, over several row blocks,
through the public train_step and grad on both kernel paths, on a narrower-vector build, and with
x and the targets ending on the last byte before an inaccessible page."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn as fnn
from fastnn import network, reference, training
from fastnn._buffers import PackedSets
from fastnn._codes import loss_inputs, row_layout
from fastnn._kernels import fused
from fastnn._kernels._config import call_compiling
from fastnn.net import ACTIVATIONS

TOL = {np.float32: dict(rtol=2e-4, atol=2e-6), np.float64: dict(rtol=1e-10, atol=1e-13)}
# Rows that are not multiples of any vector width or tile, one block and several blocks.
ROWS = (1, 3, 17, 33, fused.BLOCK_ROWS + 5, 2 * fused.BLOCK_ROWS + 40)


def _problem(sizes, activation, rows, loss, dtype, seed=0):
    net = fnn.mlp(sizes, activation=activation)
    params = fnn.init(net, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, sizes[0])).astype(dtype)
    if loss == "softmax_cross_entropy":
        y = rng.integers(0, sizes[-1], size=rows)
    elif loss == "sigmoid_cross_entropy":
        y = rng.integers(0, 2, size=(rows, sizes[-1])).astype(dtype)
    else:
        y = rng.normal(size=(rows, sizes[-1])).astype(dtype)
    return net, params, x, y


def _fused_grad(net, params, x, y, loss):
    """The gradient as ``grad`` computes it on a fused net (``fused_grad_checked_into``, whose body
    is ``_fused_grad``), into a buffer poisoned first: every entry must be written."""
    params, dtype, x2d, loss_in = network.prepare_batch(net, params, x, y, loss, True)
    sets = PackedSets(net.shapes(), dtype, 1)
    flat = np.full(sets.size, np.nan, dtype)
    fits, value = call_compiling(fused.fused_grad_checked_into, params, row_layout(net, dtype)[0], x2d, loss_in,
                                 sets.packing, flat)
    assert fits
    return value, _views(flat, sets)


def _assert_grads_close(got, expected, dtype):
    for (gW, gb), (eW, eb) in zip(got, expected):
        assert gW.dtype == dtype and gb.dtype == dtype
        np.testing.assert_allclose(gW, eW, **TOL[dtype])
        np.testing.assert_allclose(gb, eb, **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_fused_gradient_matches_the_reference_for_every_activation(dtype, activation):
    net, params, x, y = _problem((5, 17, 9, 3), activation, 40, "mse", dtype)
    value, grads = _fused_grad(net, params, x, y, "mse")
    expected_value, expected = reference.grad(net, params, x, y, "mse")
    np.testing.assert_allclose(value, expected_value, **TOL[dtype])
    _assert_grads_close(grads, expected, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("sizes", [(1, 1), (3, 15, 1), (16, 33, 17, 10), (33, 8, 64), (7, 6, 7)])
def test_fused_gradient_matches_the_reference_at_awkward_sizes(dtype, rows, sizes):
    loss = "softmax_cross_entropy" if sizes[-1] > 1 else "mse"
    net, params, x, y = _problem(sizes, "tanh", rows, loss, dtype, seed=rows)
    value, grads = _fused_grad(net, params, x, y, loss)
    expected_value, expected = reference.grad(net, params, x, y, loss)
    np.testing.assert_allclose(value, expected_value, **TOL[dtype])
    _assert_grads_close(grads, expected, dtype)


@pytest.mark.parametrize("loss", ["mse", "mae", "huber", "sigmoid_cross_entropy", "softmax_cross_entropy"])
def test_fused_gradient_matches_the_reference_for_every_loss(loss):
    net, params, x, y = _problem((7, 12, 4), "relu", 50, loss, np.float64)
    value, grads = _fused_grad(net, params, x, y, loss)
    expected_value, expected = reference.grad(net, params, x, y, loss)
    np.testing.assert_allclose(value, expected_value, **TOL[np.float64])
    _assert_grads_close(grads, expected, np.float64)


def test_an_empty_batch_gives_zero_gradients():
    net, params, x, y = _problem((4, 6, 2), "relu", 0, "mse", np.float32)
    value, grads = _fused_grad(net, params, x, y, "mse")
    assert value == 0.0 and all((W == 0).all() and (b == 0).all() for W, b in grads)


def test_nan_propagates_to_the_gradient():
    net, params, x, y = _problem((4, 6, 2), "tanh", 9, "mse", np.float32)
    x[3, 1] = np.nan
    value, grads = _fused_grad(net, params, x, y, "mse")
    assert np.isnan(value) and np.isnan(grads[0][0]).any()


@pytest.mark.parametrize("path", ["fused", "blas"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_public_train_step_and_grad_agree_with_the_reference_on_both_paths(monkeypatch, path, dtype, optimizer):
    """train_step and grad take the fused kernels up to FUSED_MAX_WEIGHTS, BLAS above: both agree
    with the reference; two chained steps check the moments too."""
    monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS", 1 << 40 if path == "fused" else 0)
    monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS_WIDE", 0)
    net, params, x, y = _problem((6, 19, 3), "gelu", 37, "softmax_cross_entropy", dtype)
    assert network.fused(net) == (path == "fused")
    opt = getattr(fnn, optimizer)(1e-2)
    state = ref_state = fnn.init_state(opt, params)
    got, expected = params, params
    for _ in range(2):
        got, state, value = fnn.train_step(net, opt, got, state, x, y, "softmax_cross_entropy")
        expected, ref_state, ref_value = reference.train_step(net, opt, expected, ref_state, x, y,
                                                              "softmax_cross_entropy")
        np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    _assert_grads_close(got, expected, dtype)
    value, grads = fnn.grad(net, params, x, y, "softmax_cross_entropy")
    ref_value, ref_grads = reference.grad(net, params, x, y, "softmax_cross_entropy")
    np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    _assert_grads_close(grads, ref_grads, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fused_step_of_a_wider_net_agrees_with_the_reference(monkeypatch, dtype):
    """A net past FUSED_MAX_WEIGHTS, as AVX-512 on one thread trains it fused: hundreds of inputs
    (sums over K in several tiles' worth), a batch of several vectors plus a tail."""
    monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS", 1 << 40)
    net, params, x, y = _problem((300, 130, 3), "relu", 53, "softmax_cross_entropy", dtype)
    opt = fnn.adam(1e-3)
    state = fnn.init_state(opt, params)
    got, _, value = fnn.train_step(net, opt, params, state, x, y, "softmax_cross_entropy")
    expected, _, ref_value = reference.train_step(net, opt, params, state, x, y, "softmax_cross_entropy")
    np.testing.assert_allclose(value, ref_value, **TOL[dtype])
    _assert_grads_close(got, expected, dtype)
    _, grads = fnn.grad(net, params, x, y, "softmax_cross_entropy")  # Adam's first step is about signs
    _assert_grads_close(grads, reference.grad(net, params, x, y, "softmax_cross_entropy")[1], dtype)


def test_wider_nets_take_the_fused_kernels_only_with_avx512_on_one_thread(monkeypatch):
    """Up to FUSED_MAX_WEIGHTS a net is fused whatever the machine; up to FUSED_MAX_WEIGHTS_WIDE
    only where the tiles go by fours (AVX-512) and Numba runs one thread (BLAS takes two cores
    better); past that, BLAS."""
    import numba
    from fastnn._kernels import tiles
    small, medium, large = fnn.mlp([16, 64, 64, 1]), fnn.mlp([784, 256, 128, 10]), fnn.mlp([1024, 1024, 10])
    for quads, threads in [(True, 1), (True, 2), (False, 1), (False, 2)]:
        monkeypatch.setattr(tiles, "QUADS", quads)
        monkeypatch.setattr(numba, "get_num_threads", lambda threads=threads: threads)
        assert network.fused(small)
        assert network.fused(medium) == (quads and threads == 1)
        assert not network.fused(large)


def test_a_step_on_foreign_and_on_its_own_results_gives_the_same_bits():
    """The fast lane passes the previous step's results as their packed buffer and packs
    anything else first: a step whose inputs are copies (packed anew) equals one on the
    previous step's own results (found packed), for params and moments alike."""
    net, params, x, y = _problem((6, 19, 3), "tanh", 21, "mse", np.float32)
    opt = fnn.adam(1e-2)
    state = fnn.init_state(opt, params)
    for _ in range(2):
        params, state, _ = fnn.train_step(net, opt, params, state, x, y)
    own = fnn.train_step(net, opt, params, state, x, y)
    copied_params = tuple((W.copy(), b.copy()) for W, b in params)
    copied_state = state._replace(exp_avg=tuple((W.copy(), b.copy()) for W, b in state.exp_avg))
    for p, s in [(copied_params, state), (params, copied_state), (copied_params, copied_state)]:
        other = fnn.train_step(net, opt, p, s, x, y)
        assert other[2] == own[2]
        for got, expected in zip(_arrays(other), _arrays(own)):
            np.testing.assert_array_equal(got, expected)


def test_a_step_on_the_last_results_still_checks_the_batch_and_follows_a_new_optimizer():
    """The step on the previous step's own results skips the params and state tests, not the
    batch's: a bad x or target raises as on any step; another optimizer (equal type, other lr)
    and a step from another thread take the full way and match the reference."""
    import threading
    net, params, x, y = _problem((6, 19, 3), "tanh", 21, "mse", np.float32)
    opt = fnn.sgd(1e-2)
    state = fnn.init_state(opt, params)
    for _ in range(2):
        params, state, _ = fnn.train_step(net, opt, params, state, x, y)
    with pytest.raises(ValueError, match="x has 5 features"):
        fnn.train_step(net, opt, params, state, x[:, :5], y)
    with pytest.raises(ValueError):
        fnn.train_step(net, opt, params, state, x, y[:, :2])
    with pytest.raises(TypeError):
        fnn.train_step(net, opt, params, state, x.astype(str), y)
    with pytest.raises(ValueError, match="momentum"):  # a state without the moment it needs
        fnn.train_step(net, fnn.sgd(1e-2, momentum=0.9), params, state, x, y)
    other = fnn.sgd(0.5)
    got = fnn.train_step(net, other, params, state, x, y)
    expected = reference.train_step(net, other, params, state, x, y)
    _assert_grads_close(got[0], expected[0], np.float32)
    results = []
    thread = threading.Thread(target=lambda: results.append(fnn.train_step(net, opt, params, state, x, y)))
    thread.start()
    thread.join()
    expected = reference.train_step(net, opt, params, state, x, y)
    _assert_grads_close(results[0][0], expected[0], np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_forward_on_the_last_step_results_reads_their_buffer_to_the_same_values(dtype):
    """forward on the params the last train_step returned runs the packed row kernels on their
    buffer: one sample and a few rows agree with forward on copies of those params, also after
    the caller changes the params in place (the buffer is their memory)."""
    net, params, x, y = _problem((6, 19, 3), "tanh", 21, "mse", dtype)
    opt = fnn.adam(1e-2)
    state = fnn.init_state(opt, params)
    for _ in range(2):
        params, state, _ = fnn.train_step(net, opt, params, state, x, y)
    assert params is training._LastStep._make(net._last_step).params
    for _ in range(2):
        copies = tuple((W.copy(), b.copy()) for W, b in params)
        for xs in (x[0], x[:3]):
            np.testing.assert_allclose(fnn.forward(net, params, xs), fnn.forward(net, copies, xs), **TOL[dtype])
            np.testing.assert_allclose(fnn.forward(net, params, xs), reference.forward(net, copies, xs), **TOL[dtype])
        params[1][0][:] *= -0.5  # in place: the packed buffer must see it
    with pytest.raises(ValueError):
        fnn.forward(net, params, x[0, :5])


def _arrays(result):
    params, state, _ = result
    return [a for pair in params for a in pair] + [a for m in state[1:] for pair in m for a in pair]


def test_the_packed_step_rejects_every_offset_or_shape_outside_its_buffers():
    """fused_train_step_packed_into checks the packing against its buffers and the layout, and
    the batch against the layout, before it touches memory: each bad case returns False and
    leaves the output as it was."""
    net, params, x, y = _problem((4, 9, 2), "relu", 5, "mse", np.float64)
    layout = row_layout(net, np.dtype(np.float64))[0]
    sets = PackedSets(net.shapes(), np.dtype(np.float64), 1)
    shapes, offsets, firsts = sets.packing
    packed = sets.pack((params,))
    update = (0, np.zeros(16))  # sgd with lr 0: the step copies the params
    loss = loss_inputs("mse", y, None, np.float64, True)

    def step(packing, x=x, out_size=packed.size):
        out = np.full(out_size, 7.0)
        fits, _ = call_compiling(fused.fused_train_step_packed_into, packing, packed, layout, x, loss, update, out)
        return fits, out

    fits, out = step(sets.packing)
    assert fits
    for (W, b), (W_out, b_out) in zip(params, _views(out, sets)):
        np.testing.assert_array_equal(W_out, W)
        np.testing.assert_array_equal(b_out, b)
    last = np.arange(offsets.size) == offsets.size - 1
    for packing in [
        (shapes, np.where(last, packed.size - 1, offsets), firsts),  # the last b runs past the end
        (shapes, np.where(np.arange(offsets.size) == 0, -1, offsets), firsts),  # a negative offset
        (shapes, offsets[:-1], firsts),  # fewer offsets than arrays
        (shapes, offsets, (1,)),  # a set starting one array late runs off the offsets
        (((4, 9), (9, 3)), offsets, firsts),  # shapes that are not the layout's
    ]:
        fits, out = step(packing)
        assert not fits and (out == 7.0).all()
    fits, out = step(sets.packing, out_size=packed.size - 1)  # the output is shorter than the input
    assert not fits and (out == 7.0).all()
    fits, out = step(sets.packing, x=x[:, :3].copy())  # x narrower than the layout
    assert not fits and (out == 7.0).all()


def test_the_checked_gradient_rejects_every_shape_outside_its_layout():
    """fused_grad_checked_into checks the params against the layout, the packing against its
    output and the batch (targets, labels' range) before it touches memory: each bad case
    returns False and leaves the output as it was."""
    net, params, x, y = _problem((4, 9, 2), "relu", 5, "mse", np.float64)
    layout = row_layout(net, np.dtype(np.float64))[0]
    sets = PackedSets(net.shapes(), np.dtype(np.float64), 1)
    mse = loss_inputs("mse", y, None, np.float64, True)

    def gradient(params=params, x=x, loss=mse, packing=sets.packing, out_size=sets.size):
        out = np.full(out_size, 7.0)
        fits, _ = call_compiling(fused.fused_grad_checked_into, params, layout, x, loss, packing, out)
        return fits, out

    fits, out = gradient()
    assert fits and not (out == 7.0).all()
    shapes, offsets, firsts = sets.packing
    assert gradient(out_size=offsets[-1] + shapes[-1][1])[0]  # the views' span is enough
    (W1, b1), (W2, b2) = params
    labels = np.array([0, 1, 1, 0, 2])  # 2 is past the last of the net's 2 classes
    for case in [
        dict(params=((W1[:, :8].copy(), b1[:8].copy()), (W2[:8].copy(), b2))),  # widths not the layout's
        dict(params=((W1, b1[:8].copy()), (W2, b2))),  # a b too short
        dict(params=((W1, b1),)),  # fewer layers than the layout
        dict(x=x[:, :3].copy()),  # x narrower than the layout
        dict(loss=loss_inputs("mse", y[:4].copy(), None, np.float64, True)),  # fewer targets than rows
        dict(loss=loss_inputs("softmax_cross_entropy", None, labels, np.float64, True)),
        dict(loss=loss_inputs("mse", y, None, np.float64, True, np.ones(4))),  # fewer weights than rows
        dict(packing=(shapes, np.where(np.arange(offsets.size) == offsets.size - 1, sets.size - 1, offsets), firsts)),
        dict(packing=(shapes, offsets, (0, 0))),  # two sets where the gradient is one
        dict(out_size=offsets[-1] + shapes[-1][1] - 1),  # the last b would end past the output
    ]:
        fits, out = gradient(**case)
        assert not fits and (out == 7.0).all(), case


def test_grad_takes_its_fast_lane_once_compiled(monkeypatch):
    """After the first call (the checked way, which compiles the kernel), grad on plain arrays
    skips the Python checks (``network._fused_grad_unchecked``) and still agrees with the
    reference, for targets and for labels."""
    for loss in ("mse", "softmax_cross_entropy"):
        net, params, x, y = _problem((6, 19, 3), "tanh", 21, loss, np.float32)
        fnn.grad(net, params, x, y, loss)
        with monkeypatch.context() as patch:
            patch.setattr(network, "prepare_batch", _no_checked_way)
            value, grads = fnn.grad(net, params, x, y, loss)
        expected_value, expected = reference.grad(net, params, x, y, loss)
        np.testing.assert_allclose(value, expected_value, **TOL[np.float32])
        _assert_grads_close(grads, expected, np.float32)


def _no_checked_way(*args):
    raise AssertionError("took the checked way")


def test_grad_after_its_fast_lane_gives_other_inputs_the_same_bits_or_the_same_errors():
    """The fast lane screens types, not layouts or shapes: a strided, Fortran-ordered or
    read-only x, target or param, params in a list, or x of another dtype, go the checked way
    (which converts them) to the plain call's bits; bad shapes and labels raise as they would
    on a first call."""
    net, params, x, y = _problem((6, 19, 3), "tanh", 21, "mse", np.float32)
    expected = fnn.grad(net, params, x, y, "mse")
    expected = fnn.grad(net, params, x, y, "mse")  # the fast lane's
    variants = _unusual_arrays(params, x, y)
    variants.update({
        "float64 x": (params, x.astype(np.float64), y),
        "read-only W": (((_read_only(params[0][0]), params[0][1]),) + params[1:], x, y),
        "a list of params": (list(params), x, y),
    })
    for name, (p, xv, yv) in variants.items():
        value, grads = fnn.grad(net, p, xv, yv, "mse")
        assert value == expected[0], name
        for (gW, gb), (eW, eb) in zip(grads, expected[1]):
            np.testing.assert_array_equal(gW, eW, err_msg=name)
            np.testing.assert_array_equal(gb, eb, err_msg=name)
    with pytest.raises(ValueError, match="x has 5 features"):
        fnn.grad(net, params, x[:, :5].copy(), y)
    with pytest.raises(ValueError):
        fnn.grad(net, params, x, y[:, :2].copy())
    with pytest.raises(ValueError):
        fnn.grad(net, params, x, y[:20].copy())
    with pytest.raises(ValueError):
        fnn.grad(net, ((params[0][0][:, :18].copy(), params[0][1][:18].copy()),) + params[1:], x, y)
    labels = np.arange(21) % 3
    fnn.grad(net, params, x, labels, "softmax_cross_entropy")
    labels[4] = 3
    with pytest.raises(ValueError):
        fnn.grad(net, params, x, labels, "softmax_cross_entropy")


def _views(flat, sets):
    shapes, offsets, _ = sets.packing
    return [(flat[offsets[2 * l]:offsets[2 * l] + m * n].reshape(m, n), flat[offsets[2 * l + 1]:offsets[2 * l + 1] + n])
            for l, (m, n) in enumerate(shapes)]


@pytest.mark.parametrize("bad", ["dtype", "shape", "list", "depth", "sets"])
def test_packing_takes_only_arrays_of_the_layout(bad):
    """PackedSets.pack returns None for anything but params-shaped tuples of ndarrays of its
    dtype and shapes; the fast lane then leaves the call to the checked way."""
    net, params, _, _ = _problem((4, 9, 2), "relu", 5, "mse", np.float32)
    sets = PackedSets(net.shapes(), np.dtype(np.float32), 2)
    good = (params, params)
    assert sets.pack(good) is not None
    W, b = params[1]
    changed = {"dtype": (params, (params[0], (W.astype(np.float64), b))),
               "shape": (params, (params[0], (W[:, :1], b[:1]))),
               "list": (params, list(params)),
               "depth": (params, params[:1]),
               "sets": (params,)}[bad]
    assert sets.pack(changed) is None


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _unusual_arrays(params, x, y):
    """{name: (params, x, y)} with one of them strided, Fortran-ordered or read-only: the same
    values in arrays Numba types otherwise than plain ones."""
    wide_x = np.zeros((x.shape[0], 2 * x.shape[1]), x.dtype)
    wide_x[:, ::2] = x
    return {
        "strided x": (params, wide_x[:, ::2], y),
        "Fortran x": (params, np.asfortranarray(x), y),
        "read-only x": (params, _read_only(x), y),
        "Fortran target": (params, x, np.asfortranarray(y)),
        "read-only target": (params, x, _read_only(y)),
        "Fortran W": (((np.asfortranarray(params[0][0]), params[0][1]),) + params[1:], x, y),
        "read-only b": (((params[0][0], _read_only(params[0][1])),) + params[1:], x, y),
    }


def test_train_step_takes_strided_fortran_and_read_only_arrays_to_the_same_bits():
    """The unchecked fast lane screens no memory layout: the call's own type check must send a
    strided, Fortran-ordered or read-only x, target or param to the checked way, which copies
    what it must. Each variant, after a contiguous step has compiled the fast lane, gives the
    contiguous step's bits."""
    net, params, x, y = _problem((6, 19, 3), "tanh", 21, "mse", np.float32)
    opt = fnn.adam(1e-2)
    state = fnn.init_state(opt, params)
    expected = fnn.train_step(net, opt, params, state, x, y, "mse")
    for name, (p, xv, yv) in _unusual_arrays(params, x, y).items():
        got = fnn.train_step(net, opt, p, state, xv, yv, "mse")
        assert got[2] == expected[2], name
        for (gW, gb), (eW, eb) in zip(got[0], expected[0]):
            np.testing.assert_array_equal(gW, eW, err_msg=name)
            np.testing.assert_array_equal(gb, eb, err_msg=name)
        for moment, expected_moment in zip(got[1][1:], expected[1][1:]):
            for (mW, mb), (eW, eb) in zip(moment, expected_moment):
                np.testing.assert_array_equal(mW, eW, err_msg=name)
                np.testing.assert_array_equal(mb, eb, err_msg=name)


_SUBPROCESS_CHECK = """
    import numpy as np
    import tests.test_fused as t
    from fastnn._kernels import simd
    print(simd.LANES)
    for dtype in (np.float32, np.float64):
        for rows in (1, 7, 21, 200):
            net, params, x, y = t._problem((9, 13, 5), "silu", rows, "softmax_cross_entropy", dtype, seed=rows)
            {place}
            value, grads = t._fused_grad(net, params, x, y, "softmax_cross_entropy")
            expected_value, expected = t.reference.grad(net, params, x, y, "softmax_cross_entropy")
            np.testing.assert_allclose(value, expected_value, **t.TOL[dtype])
            t._assert_grads_close(grads, expected, dtype)
            # the row kernels (explicit vectors too): one sample, a few rows, the Predictor
            for got in (t.fnn.forward(net, params, x[0]), t.fnn.Predictor(net, params)(x[0])):
                np.testing.assert_allclose(got, t.reference.forward(net, params, x[0]), **t.TOL[dtype])
            np.testing.assert_allclose(t.fnn.forward(net, params, x[:3]), t.reference.forward(net, params, x[:3]),
                                       **t.TOL[dtype])
    print("ok")
"""


def _run(code, **env_changes):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]), **env_changes)
    env.pop("NUMBA_CPU_FEATURES", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=root)


def test_a_narrower_vector_build_gives_the_same_gradients(tmp_path):
    """Compiled for a CPU without AVX (4 float32 lanes), the fused kernels and the row kernels of a
    few samples still agree with the reference."""
    result = _run(_SUBPROCESS_CHECK.format(place=""), NUMBA_CPU_NAME="x86-64",
                  NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["4", "ok"]


def test_inputs_ending_before_an_inaccessible_page_are_read_in_bounds():
    """x and the labels each end on the last byte before a page with no access: a read past them
    would kill the process."""
    place = """
            import ctypes, mmap
            page = mmap.PAGESIZE
            libc = ctypes.CDLL(None, use_errno=True)
            def at_page_end(a):
                pages = -(-a.nbytes // page) + 1
                buf = mmap.mmap(-1, pages * page, prot=mmap.PROT_READ | mmap.PROT_WRITE)
                base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
                assert libc.mprotect(ctypes.c_void_p(base + (pages - 1) * page), ctypes.c_size_t(page), 0) == 0
                out = np.frombuffer(buf, a.dtype, count=a.size, offset=(pages - 1) * page - a.nbytes).reshape(a.shape)
                out[...] = a
                return out
            x, y = at_page_end(x), at_page_end(y)"""
    result = _run(_SUBPROCESS_CHECK.format(place=place.strip()))
    assert result.returncode == 0, (result.returncode, result.stderr[-3000:])
    assert result.stdout.split()[-1] == "ok"
