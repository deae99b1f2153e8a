"""fit, batches, predict, metrics and check_grad: compiled fit against reference.fit and hand loops."""

import io
import sys

import numpy as np
import pytest
from sklearn.metrics import r2_score

import fastnn as fnn
import fastnn.reference as ref
from fastnn import schedules

from conftest import DTYPES, TOL, assert_tree_close, assert_tree_dtype, flat

NET = fnn.mlp([5, 7, 3], activation="tanh")
RNG = np.random.default_rng(7)
X = RNG.normal(size=(45, 5))
LABELS = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
DENSE = RNG.normal(size=(45, 3))


def _fit_both(params, y, loss, **kw):
    return [impl.fit(NET, params, X, y, loss=loss, progress=False, **kw) for impl in (fnn, ref)]


# --- the compiled fit takes the same steps as the reference loop ---------------------------------

FIT_CASES = {
    "adam-labels": dict(loss="softmax_cross_entropy", y=LABELS, optimizer=fnn.adam(1e-2)),
    "sgd-momentum-dense": dict(loss="mse", y=DENSE, optimizer=fnn.sgd(0.05, momentum=0.9, nesterov=True)),
    "rmsprop-centered-huber": dict(loss="huber", y=DENSE, optimizer=fnn.rmsprop(1e-2, centered=True, momentum=0.5)),
    "adagrad-drop-last": dict(loss="mae", y=DENSE, optimizer=fnn.adagrad(0.1), drop_last=True),
    "adamw-schedule-clip": dict(loss="softmax_cross_entropy", y=LABELS,
                                optimizer=fnn.adamw(schedules.warmup_cosine(0.05, 3, 20), clip_norm=0.5)),
    "no-shuffle-whole-set": dict(loss="mse", y=DENSE, optimizer=fnn.adam(1e-2), shuffle=False, batch_size=100),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(FIT_CASES))
def test_fit_matches_reference_fit(case, dtype):
    kw = dict(FIT_CASES[case])
    kw.setdefault("batch_size", 8)
    params = fnn.init(NET, seed=3, dtype=dtype)
    (pa, ha), (pb, hb) = _fit_both(params, kw.pop("y"), kw.pop("loss"), epochs=4, seed=5, **kw)
    assert_tree_dtype(pa, dtype)
    assert_tree_close(pa, pb, dtype, rtol=TOL[np.dtype(dtype)]["rtol"] * 10)
    np.testing.assert_allclose(ha["loss"], hb["loss"], rtol=TOL[np.dtype(dtype)]["rtol"] * 10)
    per_epoch = 45 // 8 if kw.get("drop_last") else -(-45 // min(kw["batch_size"], 45))
    assert ha.state.count == hb.state.count == 4 * per_epoch
    assert_tree_close(flat(ha.state[1]), flat(hb.state[1]), dtype, rtol=TOL[np.dtype(dtype)]["rtol"] * 10)


@pytest.mark.parametrize("case", ["adam-labels", "rmsprop-centered-huber"])
def test_fit_in_row_blocks_matches_reference_fit(small_blocks, case):
    """Batches of 8 (and a last one of 5) through the network in blocks of 4 rows."""
    kw = dict(FIT_CASES[case])
    params = fnn.init(NET, seed=4, dtype=np.float64)
    (pa, ha), (pb, hb) = _fit_both(params, kw.pop("y"), kw.pop("loss"), epochs=3, seed=6, batch_size=8, **kw)
    assert_tree_close(pa, pb, np.float64)
    np.testing.assert_allclose(ha["loss"], hb["loss"], **TOL[np.dtype(np.float64)])


def test_fit_is_a_loop_of_train_step_over_batches():
    """fit's epochs are exactly train_step over fnn.batches drawn from the same generator."""
    params = fnn.init(NET, seed=1)
    opt = fnn.adam(1e-2)
    got, history = fnn.fit(NET, params, X, LABELS, loss="softmax_cross_entropy", optimizer=opt, epochs=3,
                           batch_size=10, seed=11, progress=False)
    rng = np.random.default_rng(11)
    state = fnn.init_state(opt, params)
    p = params
    for epoch in range(3):
        losses = []
        for xb, yb in fnn.batches(X, LABELS, 10, seed=rng):
            p, state, value = fnn.train_step(NET, opt, p, state, xb, yb, loss="softmax_cross_entropy")
            losses.append(value * len(yb))
        assert history["loss"][epoch] == pytest.approx(sum(losses) / len(LABELS), rel=1e-12)
    assert_tree_close(got, p, np.float64)


def test_fit_is_pure_and_deterministic():
    params = fnn.init(NET, seed=1)
    saved = [a.copy() for a in flat(params)]
    x, y = X.copy(), LABELS.copy()
    state = fnn.init_state(fnn.adam(), params)
    kw = dict(loss="softmax_cross_entropy", epochs=2, batch_size=8, progress=False, state=state)
    a, ha = fnn.fit(NET, params, x, y, seed=4, **kw)
    b, hb = fnn.fit(NET, params, x, y, seed=4, **kw)
    c, _ = fnn.fit(NET, params, x, y, seed=5, **kw)
    for before, after in zip(saved, flat(params)):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(x, X)
    np.testing.assert_array_equal(y, LABELS)
    assert all(not m.any() for m in flat(state.exp_avg))
    assert all(np.array_equal(u, v) for u, v in zip(flat(a), flat(b)))
    assert ha["loss"] == hb["loss"]
    assert not all(np.array_equal(u, v) for u, v in zip(flat(a), flat(c)))


@pytest.mark.parametrize("epochs", [1, 2])  # an odd and an even number of steps (5 batches)
def test_fit_returns_arrays_of_its_own(epochs):
    """fit hands its working arrays over at the end: no two of the returned params and moments
    share memory, none shares with the inputs, and training on from them leaves them unchanged."""
    params = fnn.init(NET, seed=3)
    kw = dict(loss="mse", optimizer=fnn.adam(1e-2), batch_size=10, progress=False)
    out, hist = fnn.fit(NET, params, X, DENSE, epochs=epochs, **kw)
    returned = flat(out) + flat(hist.state.exp_avg) + flat(hist.state.exp_avg_sq)
    for i, a in enumerate(returned):
        assert a.flags.c_contiguous and a.flags.writeable
        for b in returned[i + 1:] + flat(params):
            assert not np.shares_memory(a, b)
    kept = [a.copy() for a in returned]
    fnn.fit(NET, out, X, DENSE, epochs=1, state=hist.state, **kw)
    for before, after in zip(kept, returned):
        np.testing.assert_array_equal(before, after)


def test_continuing_from_history_state_equals_one_longer_fit():
    params = fnn.init(NET, seed=2)
    kw = dict(loss="mse", optimizer=fnn.adam(1e-2), batch_size=16, shuffle=False, progress=False)
    whole, h4 = fnn.fit(NET, params, X, DENSE, epochs=4, **kw)
    half, h2 = fnn.fit(NET, params, X, DENSE, epochs=2, **kw)
    rest, h22 = fnn.fit(NET, half, X, DENSE, epochs=2, state=h2.state, **kw)
    assert_tree_close(rest, whole, np.float64)
    assert h2["loss"] + h22["loss"] == pytest.approx(h4["loss"], rel=1e-12)
    assert h22.state.count == h4.state.count == 12


# --- validation, metrics, early stopping, callbacks ----------------------------------------------

def test_validation_split_holds_out_the_last_samples():
    params = fnn.init(NET, seed=0)
    kw = dict(loss="softmax_cross_entropy", epochs=2, batch_size=8, progress=False, metrics=["accuracy"])
    a, ha = fnn.fit(NET, params, X, LABELS, validation_split=0.2, **kw)
    b, hb = fnn.fit(NET, params, X[:36], LABELS[:36], validation_data=(X[36:], LABELS[36:]), **kw)
    assert {k: v for k, v in ha.items() if k != "time"} == {k: v for k, v in hb.items() if k != "time"}
    out = fnn.forward(NET, a, X[36:])
    assert ha["val_accuracy"][-1] == pytest.approx(np.mean(np.argmax(out, 1) == LABELS[36:]))
    assert ha["val_loss"][-1] == pytest.approx(fnn.grad(NET, a, X[36:], LABELS[36:], "softmax_cross_entropy")[0])
    assert set(ha) == {"loss", "accuracy", "val_loss", "val_accuracy", "time"}


def _sorted_labels(n=90):
    """Three classes of 30 samples each, in order: the last 20% hold only class 2."""
    rng = np.random.default_rng(4)
    y = np.repeat(np.arange(3), n // 3)
    x = rng.normal(size=(n, 5)) + y[:, None]
    return x, y


def test_a_last_split_of_sorted_labels_warns_and_a_shuffled_one_is_stratified():
    x, y = _sorted_labels()
    params = fnn.init(NET, seed=0)
    kw = dict(loss="softmax_cross_entropy", epochs=2, validation_split=0.2, progress=False)
    with pytest.warns(UserWarning, match="hold only class 2: the data look sorted"):
        fnn.fit(NET, params, x, y, **kw)
    from fastnn.data import held_out_shuffled, split
    held = held_out_shuffled(y, 0.2, np.random.default_rng(0), stratify=True)
    (x_train, y_train), (x_val, y_val) = split(held, x, y)
    assert np.bincount(y_val).tolist() == [6, 6, 6] and np.bincount(y_train).tolist() == [24, 24, 24]
    assert sorted(map(tuple, np.vstack([x_train, x_val]).round(12))) == sorted(map(tuple, x.round(12)))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got, history = fnn.fit(NET, params, x, y, split="shuffled", seed=5, **kw)
        expected, ref_history = ref.fit(NET, params, x, y, split="shuffled", seed=5, **kw)
    np.testing.assert_allclose(history["val_loss"], ref_history["val_loss"], rtol=1e-4)
    assert_tree_close(got, expected, np.float32)
    again, _ = fnn.fit(NET, params, x, y, split="shuffled", seed=5, **kw)
    assert_tree_close(again, got, np.float32)
    with pytest.raises(ValueError, match="split must be one of 'last', 'shuffled'"):
        fnn.fit(NET, params, x, y, split="random", **kw)


def test_regression_metrics_match_numpy_and_sklearn():
    params = fnn.init(NET, seed=0)
    p, h = fnn.fit(NET, params, X, DENSE, loss="mse", epochs=2, batch_size=8, progress=False,
                   metrics=["mae", "r2"], validation_data=(X[:10], DENSE[:10]))
    out = fnn.forward(NET, p, X)
    assert h["mae"][-1] == pytest.approx(np.mean(np.abs(out - DENSE)))
    assert h["r2"][-1] == pytest.approx(r2_score(DENSE, out))
    assert h["val_r2"][-1] == pytest.approx(r2_score(DENSE[:10], out[:10]))


@pytest.mark.parametrize("loss, y, expected", [
    ("sigmoid_cross_entropy", np.array([[1.0], [0.0], [1.0]]), 2 / 3),   # logits 2, -1, -3
    ("mse", np.array([[1.0], [0.0], [0.0]]), 1.0),                      # threshold 0.5 on outputs
    # argmax of outputs 1, 1, 0 against argmax of targets 1, 0, 0 (a tie goes to the first class)
    ("softmax_cross_entropy", np.array([[0.2, 0.8], [0.9, 0.1], [0.5, 0.5]]), 2 / 3),
])
def test_accuracy_rules(loss, y, expected):
    from fastnn.metrics import compute
    out = np.array([[2.0], [-1.0], [-3.0]]) if y.shape[1] == 1 else np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    assert compute("accuracy", loss, out, y, None) == pytest.approx(expected)


def test_early_stopping_stops_after_patience_and_restores_the_best_epoch():
    params = fnn.init(NET, seed=0)
    kw = dict(loss="mse", optimizer=fnn.adam(1e-2), batch_size=8, seed=3, progress=False)
    # A min_delta nothing can beat: epoch 1 stays the best, training stops at epoch 1 + patience.
    stopper = fnn.EarlyStopping(patience=2, min_delta=1e9, monitor="loss")
    got, h = fnn.fit(NET, params, X, DENSE, epochs=10, early_stopping=stopper, **kw)
    assert h.epochs == 3 and h.stopped_early and h.best_epoch == 1
    one, h1 = fnn.fit(NET, params, X, DENSE, epochs=1, **kw)
    assert_tree_close(got, one, np.float64, rtol=0, atol=0)
    assert h.state.count == h1.state.count
    kept, _ = fnn.fit(NET, params, X, DENSE, epochs=10,
                      early_stopping=fnn.EarlyStopping(2, 1e9, "loss", restore_best=False), **kw)
    assert not all(np.array_equal(u, v) for u, v in zip(flat(kept), flat(one)))


def test_early_stopping_patience_shorthand_and_best_epoch():
    params = fnn.init(NET, seed=0)
    _, h = fnn.fit(NET, params, X, LABELS, loss="softmax_cross_entropy", optimizer=fnn.adam(0.05), epochs=30,
                   batch_size=4, validation_split=0.3, early_stopping=3, progress=False)
    val = h["val_loss"]
    assert h.stopped_early and h.epochs < 30  # this small set overfits within a few epochs
    assert h.best_epoch == int(np.argmin(val)) + 1
    assert h.epochs == h.best_epoch + 3
    assert min(val[h.best_epoch:]) >= val[h.best_epoch - 1]


def test_callbacks_see_each_epoch_and_can_stop():
    seen = []

    def record(epoch, logs):
        seen.append((epoch, logs))
        return epoch == 3

    _, h = fnn.fit(NET, fnn.init(NET, seed=0), X, DENSE, epochs=10, callbacks=[record], progress=False)
    assert [e for e, _ in seen] == [1, 2, 3]
    assert h.epochs == 3 and h.stopped_early
    assert [logs["loss"] for _, logs in seen] == h["loss"]


def test_non_finite_loss_names_the_epoch():
    x = X.copy()
    x[20, 1] = np.nan
    with pytest.raises(FloatingPointError, match="epoch 1"):
        fnn.fit(NET, fnn.init(NET, seed=0), x, DENSE, epochs=3, progress=False)
    with pytest.raises(FloatingPointError, match=r"epoch \d"), np.errstate(over="ignore", invalid="ignore"):
        ref.fit(NET, fnn.init(NET, seed=0), X, DENSE * 1e30, optimizer=fnn.sgd(1e10), epochs=5, progress=False)


def test_progress_lines_on_stderr(capsys):
    fnn.fit(NET, fnn.init(NET, seed=0), X, DENSE, epochs=2, progress=True)
    err = capsys.readouterr().err.splitlines()
    assert [line.split()[:2] for line in err] == [["epoch", "1/2"], ["epoch", "2/2"]]
    fnn.fit(NET, fnn.init(NET, seed=0), X, DENSE, epochs=2)  # not a terminal: silent by default
    assert capsys.readouterr().err == ""


# --- batches -------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch_size, drop_last", [(4, False), (4, True), (45, False), (100, False), (1, False)])
def test_batches_cover_every_sample_once(batch_size, drop_last):
    x = np.arange(45 * 2).reshape(45, 2)
    y = np.arange(45)
    got = list(fnn.batches(x, y, batch_size, seed=1, drop_last=drop_last))
    ids = np.concatenate([yb for _, yb in got])
    expected = 45 - 45 % batch_size if drop_last else 45
    assert len(ids) == expected and len(set(ids.tolist())) == expected
    assert all(np.array_equal(xb[:, 0] // 2, yb) for xb, yb in got)
    assert all(len(yb) == min(batch_size, 45) for _, yb in got[:-1])


def test_batches_seeded_shuffle_is_reproducible():
    y = np.arange(30)
    run = lambda seed: np.concatenate([b for _, b in fnn.batches(y[:, None], y, 7, seed=seed)])  # noqa: E731
    assert np.array_equal(run(3), run(3))
    assert not np.array_equal(run(3), run(4))
    ordered = np.concatenate([b for _, b in fnn.batches(y[:, None], y, 7, shuffle=False)])
    assert np.array_equal(ordered, y)


# --- predict, probabilities, check_grad ----------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_size", [None, 1, 4, 45, 1000])
def test_predict_in_chunks_equals_forward(dtype, batch_size):
    params = fnn.init(NET, seed=0, dtype=dtype)
    out = fnn.predict(NET, params, X, batch_size=batch_size)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref.forward(NET, params, X), **TOL[np.dtype(dtype)])
    np.testing.assert_allclose(fnn.predict(NET, params, X[0], batch_size=batch_size), out[0], rtol=1e-6)
    assert fnn.predict(NET, params, X[:0], batch_size=batch_size).shape == (0, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_and_sigmoid_are_stable_and_keep_dtype(dtype):
    from scipy.special import expit, softmax
    z = np.array([[-1e4, 0.0, 1e4], [1.0, 2.0, 3.0], [-800.0, -801.0, -802.0]], dtype=dtype)
    p = fnn.softmax(z)
    assert p.dtype == dtype and np.all(np.isfinite(p))
    np.testing.assert_allclose(p, softmax(z.astype(np.float64), axis=-1), rtol=1e-6, atol=1e-30)
    s = fnn.sigmoid(z)
    assert s.dtype == dtype and np.all(np.isfinite(s))
    np.testing.assert_allclose(s, expit(z.astype(np.float64)), rtol=1e-6, atol=1e-30)
    assert fnn.softmax([1, 2]).dtype == np.float64


def test_check_grad_is_small_for_correct_gradients_and_catches_wrong_ones(monkeypatch):
    params = fnn.init(NET, seed=0, dtype=np.float32)
    assert fnn.check_grad(NET, params, X[:6], LABELS[:6], loss="softmax_cross_entropy") < 1e-6
    assert fnn.check_grad(NET, params, X[:6], DENSE[:6], loss="huber", max_entries=10) < 1e-6

    import fastnn.gradcheck as gc
    real = gc.grad

    def off_by_a_bit(*args):
        value, grads = real(*args)
        return value, tuple((W * 1.01, b) for W, b in grads)

    monkeypatch.setattr(gc, "grad", off_by_a_bit)
    assert fnn.check_grad(NET, params, X[:6], LABELS[:6], loss="softmax_cross_entropy") > 5e-3


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("impl", [fnn, ref])
def test_the_live_bar_shows_the_running_loss_elapsed_time_and_eta(impl, monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    params, history = impl.fit(NET, fnn.init(NET, seed=0), X, DENSE, loss="mse", epochs=2, batch_size=4)
    text = terminal.getvalue()
    bars = [part for part in text.split("\r") if "]" in part and "/2 [" in part]
    assert bars and all("elapsed, ETA " in b for b in bars)
    first = bars[0].split("loss ")[1].split()[0]
    assert float(first) > 0
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.startswith("epoch 2/2  loss ")]
    assert lines and f"loss {history['loss'][1]:.4g}" in lines[0] and "ETA 0.0s" in lines[0]
