"""The activations' forms (kernels/activations.py): compiled per code and dtype when a net first
needs them, and called by address from a table. Every public entry point must make its net's
forms ready for the dtype at hand before a kernel runs; a kernel that meets a form not ready
writes NaN, which these tests would see."""

import contextlib
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import numba

import fastnn as fnn
import fastnn.reference as ref
from fastnn import _codes, network
from fastnn._kernels import activations as kact
from fastnn._kernels import losses as kloss
from fastnn.losses import mean_loss as ref_loss

from conftest import TOL

SIZES = (5, 7, 3)
ACTIVATION = "softplus"
NO_LABELS = np.empty(0, np.int64)
NO_WEIGHTS = np.empty(0)


def _forgotten(forms, codes):
    """Clears the table slots of these codes' float64 forms (as in a new process) until the
    context ends, then puts back those not ensured again meanwhile."""
    slots = [forms.slot(direction, numba.float64, code) for direction in range(len(forms.forms)) for code in codes]
    saved = [forms.table[s] for s in slots]
    for s in slots:
        forms.table[s] = 0
    try:
        yield
    finally:
        for s, address in zip(slots, saved):
            forms.table[s] = forms.table[s] or address


@pytest.fixture
def forms_forgotten():
    """The test net's activation forms (ACTIVATION's and the identity's) and its loss's (mse and
    softmax with labels), float64, forgotten: the entry point under test has to ensure them again."""
    ready = [codes.pop(np.dtype(np.float64), {}) for codes in _codes._READY_LOSS_CODES]
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.contextmanager(_forgotten)(kact.FORMS, (kact.SOFTPLUS, kact.IDENTITY)))
        stack.enter_context(contextlib.contextmanager(_forgotten)(kloss.FORMS, (kloss.MSE, kloss.SOFTMAX_CE_LABELS)))
        yield
    for codes, before in zip(_codes._READY_LOSS_CODES, ready):
        codes.setdefault(np.dtype(np.float64), {}).update(before)


def test_a_kernel_meeting_a_form_not_ready_writes_nan(forms_forgotten):
    z = np.ones((2, 3))
    kact.bias_activate_inplace(kact.SOFTPLUS, z, np.zeros(3))
    assert np.isnan(z).all()
    d = np.ones((2, 3))
    kact.chain_derivative_inplace(kact.SOFTPLUS, z, z, d)
    assert np.isnan(d).all()
    kact.ensure_forms([kact.SOFTPLUS], np.float64)
    z = np.zeros((2, 3))
    kact.bias_activate_inplace(kact.SOFTPLUS, z, np.zeros(3))
    np.testing.assert_allclose(z, np.log(2.0), rtol=1e-15)


def test_a_code_outside_the_table_writes_nan_and_reads_nothing_past_it():
    for code in (-1, kact.FORMS.codes, 1 << 40):
        z, d = np.ones((2, 3)), np.ones((2, 3))
        kact.bias_activate_inplace(code, z, np.zeros(3))
        kact.chain_derivative_inplace(code, z, z, d)
        assert np.isnan(z).all() and np.isnan(d).all(), code
    for code in (-1, kloss.FORMS.codes, 1 << 40):
        d = np.ones((2, 3))
        assert np.isnan(kloss.loss_and_grad(code, np.ones((2, 3)), np.zeros((2, 3)), NO_LABELS, NO_WEIGHTS, d, 2.0))
        assert np.isnan(d).all(), code


def test_a_kernel_meeting_a_loss_form_not_ready_returns_nan(forms_forgotten):
    out, target, labels = np.array([[1.0, 2.0], [0.5, -1.0]]), np.zeros((2, 2)), np.array([1, 0])
    for code, target_in, labels_in in ((kloss.MSE, target, NO_LABELS), (kloss.SOFTMAX_CE_LABELS, target[:0], labels)):
        d = np.ones_like(out)
        assert np.isnan(kloss.loss_and_grad(code, out, target_in, labels_in, NO_WEIGHTS, d, 2.0))
        assert np.isnan(d).all()
    d_t = np.ones((2, 4))
    assert np.isnan(kloss.softmax_ce_labels_t(np.ones((2, 4)), labels, NO_WEIGHTS, d_t, 2.0))
    assert np.isnan(d_t).all()
    kloss.ensure_forms([kloss.MSE, kloss.SOFTMAX_CE_LABELS], np.float64)
    kloss.ensure_forms([kloss.SOFTMAX_CE_LABELS], np.float64, fused=True)
    d = np.empty_like(out)
    assert kloss.loss_and_grad(kloss.MSE, out, target, NO_LABELS, NO_WEIGHTS, d, 2.0) == pytest.approx((1 + 4 + 0.25 + 1) / 4)
    np.testing.assert_allclose(d, out / 2, rtol=1e-15)
    value = kloss.softmax_ce_labels_t(np.ascontiguousarray(out.T), labels, NO_WEIGHTS, d_t, 2.0)
    assert value == pytest.approx(ref_loss("softmax_cross_entropy", out, None, labels), rel=1e-14)


def _problem(rows):
    net = fnn.mlp(list(SIZES), activation=ACTIVATION)  # a new Net: nothing is ready on it
    params = fnn.init(net, seed=0, dtype=np.float64)
    rng = np.random.default_rng(rows)
    return net, params, rng.normal(size=(rows, SIZES[0])), rng.normal(size=(rows, SIZES[-1]))


def _warm_float32(net, x, y):
    """The net used in float32 first: its row layout, packed step and float32 forms are made, and
    the float64 calls after find compiled kernels (the fast lanes) with the net's float64 forms
    forgotten."""
    params = fnn.init(net, seed=0, dtype=np.float32)
    x, y = x.astype(np.float32), y.astype(np.float32)
    opt = fnn.sgd(0.1)
    fnn.train_step(net, opt, params, fnn.init_state(opt, params), x, y)
    fnn.forward(net, params, x[0])
    fnn.forward(net, params, x[:3])
    # the float64 kernels compiled too, by a net of other activations
    other = fnn.mlp(list(SIZES), activation="relu")
    params = fnn.init(other, seed=0, dtype=np.float64)
    fnn.train_step(other, opt, params, fnn.init_state(opt, params), x.astype(np.float64), y.astype(np.float64))
    fnn.forward(other, params, x[0].astype(np.float64))
    fnn.forward(other, params, x[:3].astype(np.float64))


ENTRY_POINTS = {
    "forward one sample": lambda net, p, x, y: (fnn.forward(net, p, x[0]), ref.forward(net, p, x[0])),
    "forward few rows": lambda net, p, x, y: (fnn.forward(net, p, x[:3]), ref.forward(net, p, x[:3])),
    "forward many rows": lambda net, p, x, y: (fnn.forward(net, p, x), ref.forward(net, p, x)),
    "predict": lambda net, p, x, y: (fnn.predict(net, p, x, batch_size=4), ref.forward(net, p, x)),
    "Predictor": lambda net, p, x, y: (fnn.Predictor(net, p)(x[0]), ref.forward(net, p, x[0])),
    "grad": lambda net, p, x, y: (fnn.grad(net, p, x, y)[1][0][0], ref.grad(net, p, x, y)[1][0][0]),
    "backward": lambda net, p, x, y: (fnn.backward(net, p, x, y)[0][0][0], ref.backward(net, p, x, y)[0][0][0]),
    "train_step": lambda net, p, x, y: tuple(
        m.train_step(net, fnn.sgd(0.1), p, fnn.init_state(fnn.sgd(0.1), p), x, y)[0][0][0] for m in (fnn, ref)),
    "fit": lambda net, p, x, y: tuple(
        m.fit(net, p, x, y, optimizer=fnn.sgd(0.1), epochs=1, batch_size=4, shuffle=False, progress=False)[0][0][0]
        for m in (fnn, ref)),
    # the loss with labels: softmax cross-entropy's row and transposed forms
    "grad, labels": lambda net, p, x, y: tuple(
        m.grad(net, p, x, y.argmax(axis=1), loss="softmax_cross_entropy")[1][0][0] for m in (fnn, ref)),
    "train_step, labels": lambda net, p, x, y: tuple(
        m.train_step(net, fnn.sgd(0.1), p, fnn.init_state(fnn.sgd(0.1), p), x, y.argmax(axis=1),
                     loss="softmax_cross_entropy")[0][0][0] for m in (fnn, ref)),
}


@pytest.mark.parametrize("kernels", ["fused", "BLAS"])
@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_every_entry_point_makes_its_forms_ready(entry, kernels, forms_forgotten, monkeypatch):
    if kernels == "BLAS":  # the test net through the BLAS kernels, which take other loss forms
        monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS", 0)
        monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS_WIDE", 0)
    net, params, x, y = _problem(10)
    assert network.fused(net) == (kernels == "fused")
    _warm_float32(net, x, y)
    got, expected = ENTRY_POINTS[entry](net, params, x, y)
    np.testing.assert_allclose(got, expected, **TOL[np.dtype(np.float64)])


def test_a_train_step_loop_on_a_second_dtype_of_one_net():
    """The fast lane of train_step knows a net's step by identity; a new dtype on the same net
    takes the checked way first, which readies that dtype's forms."""
    net, params, x, y = _problem(6)
    for dtype in (np.float32, np.float64):
        p = fnn.init(net, seed=0, dtype=dtype)
        opt = fnn.sgd(0.1)
        state = fnn.init_state(opt, p)
        expected = ref.train_step(net, opt, p, state, x.astype(dtype), y.astype(dtype))[0]
        for _ in range(2):
            p, state, _ = fnn.train_step(net, opt, p, state, x.astype(dtype), y.astype(dtype))
        assert not np.isnan(p[0][0]).any()
        first = fnn.train_step(net, opt, fnn.init(net, seed=0, dtype=dtype), fnn.init_state(opt, p),
                               x.astype(dtype), y.astype(dtype))[0]
        np.testing.assert_allclose(first[0][0], expected[0][0], **TOL[np.dtype(dtype)])


def test_a_pickled_predictor_works_in_a_new_process(tmp_path):
    """The table is empty in a new process: an unpickled Predictor is made anew there, which
    readies its forms."""
    net, params, x, _ = _problem(2)
    path = tmp_path / "predictor.pkl"
    path.write_bytes(pickle.dumps(fnn.Predictor(net, params)))
    np.save(tmp_path / "x.npy", x[0])
    code = textwrap.dedent(f"""
        import pickle, numpy as np
        predict = pickle.loads(open({str(path)!r}, "rb").read())
        print(repr(predict(np.load({str(tmp_path / "x.npy")!r})).tolist()))
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    np.testing.assert_allclose(eval(result.stdout), ref.forward(net, params, x[0]), **TOL[np.dtype(np.float64)])
