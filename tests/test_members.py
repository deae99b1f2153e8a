"""Stacked params (an ensemble) through one compiled call: every function against K separate
calls on the members, the reference, and what it must refuse."""

import pickle

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref

from conftest import DTYPES, TOL, assert_tree_close, flat

NET = fnn.mlp([4, 7, 3], activation="tanh")
MEMBERS = [1, 2, 5, 16]
ROWS = 6


def _members(params):
    return [fnn.member(params, k) for k in range(fnn.ensemble.members_of(params))]


def _batch(dtype, members=None, seed=0, labels=False):
    """x and targets shared by every member, or each member's own (members given)."""
    rng = np.random.default_rng(seed)
    lead = () if members is None else (members,)
    x = rng.normal(size=lead + (ROWS, 4)).astype(dtype)
    y = rng.integers(0, 3, size=lead + (ROWS,)) if labels else rng.normal(size=lead + (ROWS, 3)).astype(dtype)
    return x, y


def _part(a, k, per_member):
    return a[k] if per_member else a


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", MEMBERS)
@pytest.mark.parametrize("per_member", [False, True])
def test_train_step_steps_each_member_as_its_own_call(kernel_path, per_member, members, dtype):
    opt = fnn.adam(lr=0.05)
    params = fnn.init(NET, seed=1, dtype=dtype, members=members)
    state = fnn.init_state(opt, params)
    x, y = _batch(dtype, members if per_member else None)
    before = [a.copy() for a in flat(params)]
    stacked, stacked_state = params, state
    separate = [(p, fnn.init_state(opt, p)) for p in _members(params)]
    for _ in range(2):  # the second step's bias corrections use count 1
        stacked, stacked_state, losses = fnn.train_step(NET, opt, stacked, stacked_state, x, y)
        assert losses.shape == (members,)
        for k, (p, s) in enumerate(separate):
            p, s, value = fnn.train_step(NET, opt, p, s, _part(x, k, per_member), _part(y, k, per_member))
            separate[k] = (p, s)
            assert losses[k] == pytest.approx(value, rel=TOL[np.dtype(dtype)]["rtol"])
    assert stacked_state.count == 2
    assert_tree_close(stacked, fnn.stack([p for p, _ in separate]), dtype)
    assert_tree_close(stacked_state.exp_avg_sq, fnn.stack([s.exp_avg_sq for _, s in separate]), dtype)
    assert all(np.array_equal(a, b) for a, b in zip(flat(params), before))
    expected, _, expected_losses = ref.train_step(NET, opt, params, state, x, y)
    _, _, first_losses = fnn.train_step(NET, opt, params, state, x, y)
    np.testing.assert_allclose(first_losses, expected_losses, rtol=TOL[np.dtype(dtype)]["rtol"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", MEMBERS)
def test_grad_of_each_member_with_labels_and_weights_of_its_own(kernel_path, members, dtype):
    params = fnn.init(NET, seed=2, dtype=dtype, members=members)
    x, labels = _batch(dtype, members, labels=True)
    weights = np.random.default_rng(1).uniform(0.1, 2.0, size=(members, ROWS))
    losses, grads = fnn.grad(NET, params, x, labels, "softmax_cross_entropy", sample_weight=weights)
    for k, p in enumerate(_members(params)):
        value, g = fnn.grad(NET, p, x[k], labels[k], "softmax_cross_entropy", sample_weight=weights[k])
        assert losses[k] == pytest.approx(value, rel=TOL[np.dtype(dtype)]["rtol"])
        assert_tree_close(fnn.member(grads, k), g, dtype)
    expected_losses, expected = ref.grad(NET, params, x, labels, "softmax_cross_entropy", weights)
    np.testing.assert_allclose(losses, expected_losses, rtol=TOL[np.dtype(dtype)]["rtol"])
    assert_tree_close(grads, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", MEMBERS)
def test_backward_and_forward_of_each_member(members, dtype):
    params = fnn.init(NET, seed=3, dtype=dtype, members=members)
    x_own, _ = _batch(dtype, members)
    x_shared, _ = _batch(dtype)
    dy = np.random.default_rng(2).normal(size=(members, ROWS, 3)).astype(dtype)
    for x, per_member in ((x_shared, False), (x_own, True)):
        grads, dx = fnn.backward(NET, params, x, dy)
        out = fnn.forward(NET, params, x)
        assert dx.shape == (members, ROWS, 4) and out.shape == (members, ROWS, 3)
        for k, p in enumerate(_members(params)):
            g, d = fnn.backward(NET, p, _part(x, k, per_member), dy[k])
            assert_tree_close(fnn.member(grads, k), g, dtype)
            np.testing.assert_allclose(dx[k], d, **TOL[np.dtype(dtype)])
            np.testing.assert_allclose(out[k], fnn.forward(NET, p, _part(x, k, per_member)), **TOL[np.dtype(dtype)])
        expected_grads, expected_dx = ref.backward(NET, params, x, dy)
        assert_tree_close(grads, expected_grads, dtype)
        np.testing.assert_allclose(dx, expected_dx, **TOL[np.dtype(dtype)])
    one_grads, one_dx = fnn.backward(NET, params, x_shared[0], dy[:, 0])
    assert one_dx.shape == (members, 4)
    np.testing.assert_allclose(one_dx, fnn.backward(NET, params, x_shared[:1], dy[:, :1])[1][:, 0], **TOL[np.dtype(dtype)])
    assert fnn.forward(NET, params, x_shared[0]).shape == (members, 3)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", MEMBERS)
def test_step_clips_each_members_gradient_on_its_own(members, dtype):
    opt = fnn.sgd(lr=0.1, momentum=0.9, clip_norm=1.0)
    params = fnn.init(NET, seed=4, dtype=dtype, members=members)
    state = fnn.init_state(opt, params)
    # Member k's gradient is scaled by 10^(k mod 3 - 1): only some exceed the clip norm, so a norm
    # taken over the whole ensemble would scale every member alike.
    scale = (10.0 ** (np.arange(members) % 3 - 1)).astype(dtype)
    grads = tuple((np.ones_like(W) * scale[:, None, None], np.ones_like(b) * scale[:, None]) for W, b in params)
    new, new_state = fnn.step(opt, params, grads, state)
    for k, p in enumerate(_members(params)):
        expected, expected_state = fnn.step(opt, p, fnn.member(grads, k), fnn.init_state(opt, p))
        assert_tree_close(fnn.member(new, k), expected, dtype)
        assert_tree_close(fnn.member(new_state.momentum_buffer, k), expected_state.momentum_buffer, dtype)
    reference, reference_state = ref.step(opt, params, grads, state)
    assert_tree_close(new, reference, dtype)
    assert new_state.count == reference_state.count == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", MEMBERS)
def test_init_state_of_stacked_params_stacks_the_members_states(members, dtype):
    opt = fnn.adagrad(initial_accumulator_value=0.5)
    params = fnn.init(NET, dtype=dtype, members=members)
    state = fnn.init_state(opt, params)
    assert state.count == 0
    for k, p in enumerate(_members(params)):
        assert_tree_close(fnn.member(state.sum, k), fnn.init_state(opt, p).sum, dtype, rtol=0, atol=0)


def test_bad_ensemble_batches_are_refused_before_any_kernel():
    opt = fnn.adam()
    params = fnn.init(NET, members=3)
    state = fnn.init_state(opt, params)
    x, y = _batch(np.float32, 3)
    with pytest.raises(ValueError, match="gives 2 members their own rows; the ensemble has 3"):
        fnn.train_step(NET, opt, params, state, x[:2], y[:2])
    with pytest.raises(ValueError, match="needs 6 rows"):
        fnn.train_step(NET, opt, params, state, x, y[0, :4])
    with pytest.raises(ValueError, match="gives each member 4 rows"):
        fnn.grad(NET, params, x, y[:, :4])
    weights = np.ones((3, ROWS))
    weights[1] = 0
    with pytest.raises(ValueError, match="only zero weights"):
        fnn.train_step(NET, opt, params, state, x, y, sample_weight=weights)
    labels = np.zeros((3, ROWS), dtype=np.int64)
    labels[2, 5] = 3
    with pytest.raises(ValueError, match="label"):
        fnn.grad(NET, params, x, labels, "softmax_cross_entropy")
    with pytest.raises(ValueError, match="an ensemble of 3 members of net"):
        fnn.train_step(fnn.mlp([4, 8, 3]), opt, params, state, x, y)
    with pytest.raises(ValueError, match="state"):
        fnn.train_step(NET, opt, params, fnn.init_state(opt, fnn.init(NET)), x, y)
    with pytest.raises(ValueError, match="gives 2 members"):
        fnn.backward(NET, params, x, np.zeros((2, ROWS, 3)))
    with pytest.raises(ValueError, match="gives 2 members"):
        fnn.forward(NET, params, x[:2])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", MEMBERS)
def test_a_predictor_of_an_ensemble_equals_forward(members, dtype):
    params = fnn.init(NET, seed=5, dtype=dtype, members=members)
    predictor = fnn.Predictor(NET, params)
    rng = np.random.default_rng(3)
    for x in (rng.normal(size=4), rng.normal(size=(3, 4)), rng.normal(size=(40, 4))):
        out = predictor(x.astype(dtype))
        np.testing.assert_allclose(out, fnn.forward(NET, params, x.astype(dtype)), **TOL[np.dtype(dtype)])
        for k, p in enumerate(_members(params)):
            np.testing.assert_allclose(out[k], fnn.Predictor(NET, p)(x.astype(dtype)), **TOL[np.dtype(dtype)])
    moved = fnn.init(NET, seed=6, dtype=dtype, members=members)
    predictor.update(moved)
    x = rng.normal(size=(2, 4)).astype(dtype)
    np.testing.assert_allclose(predictor(x), fnn.forward(NET, moved, x), **TOL[np.dtype(dtype)])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(predictor))(x), predictor(x))
    assert f"members={members}" in repr(predictor)
    with pytest.raises(ValueError, match=f"an ensemble of {members} members"):
        predictor.update(fnn.init(NET, dtype=dtype, members=members + 1))


def _regression(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x, np.tanh(x[:, :3]) + 0.1 * rng.normal(size=(n, 3))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("members", MEMBERS)
def test_fit_of_an_ensemble_fits_each_member_with_its_own_seed_and_stops_on_its_own(members, dtype):
    x, y = _regression()
    params = fnn.init(NET, seed=7, dtype=dtype, members=members)
    options = dict(optimizer=fnn.adam(lr=0.02), epochs=6, batch_size=8, seed=11, bootstrap=True,
                   validation_split=0.25, split="shuffled", early_stopping=2)
    fitted, histories = fnn.fit(NET, params, x, y, **options)
    assert len(histories) == members
    for k, (p, seed) in enumerate(zip(_members(params), fnn.member_seeds(11, members))):
        expected, history = fnn.fit(NET, p, x, y, **dict(options, seed=seed))
        assert_tree_close(fnn.member(fitted, k), expected, dtype, rtol=0, atol=0)
        assert histories[k]["val_loss"] == history["val_loss"] and histories[k].best_epoch == history.best_epoch
    if members == 2:
        reference, _ = ref.fit(NET, params, x, y, **options)
        assert_tree_close(fitted, reference, dtype, rtol=2e-3, atol=2e-4)


def test_bootstrap_trains_on_rows_drawn_with_replacement():
    x, y = _regression(n=40)
    params = fnn.init(NET, seed=8)
    options = dict(optimizer=fnn.sgd(lr=0.05), epochs=1, batch_size=40, seed=5, shuffle=False)
    fitted, _ = fnn.fit(NET, params, x, y, bootstrap=True, **options)
    rows = np.random.default_rng(5).integers(0, 40, size=40)  # fit's draw from the seed
    expected, _ = fnn.fit(NET, params, x[rows], y[rows], **options)
    assert_tree_close(fitted, expected, np.float32)
    plain, _ = fnn.fit(NET, params, x, y, **options)
    assert not np.allclose(flat(plain)[0], flat(fitted)[0])
    reference, _ = ref.fit(NET, params, x, y, bootstrap=True, **options)
    assert_tree_close(fitted, reference, np.float32)
    with pytest.raises(TypeError, match="bootstrap must be True or False"):
        fnn.fit(NET, params, x, y, bootstrap=1)


def test_a_training_loops_next_step_still_checks_the_batch():
    opt = fnn.adam()
    params = fnn.init(NET, members=3)
    x, y = _batch(np.float32, 3)
    params, state, _ = fnn.train_step(NET, opt, params, fnn.init_state(opt, params), x, y)
    with pytest.raises(ValueError, match="gives 2 members"):  # the step after a step: the fast way declines
        fnn.train_step(NET, opt, params, state, x[:2], y[:2])
    with pytest.raises(ValueError, match="x has 3 features"):
        fnn.train_step(NET, opt, params, state, x[0, :, :3], y[0])
    labels = np.full((3, ROWS), 7)
    with pytest.raises(ValueError, match="label"):
        fnn.train_step(NET, opt, params, state, x, labels, "softmax_cross_entropy")
    _, _, losses = fnn.train_step(NET, opt, params, state, x.astype(np.float64), y)  # converted, not refused
    assert losses.shape == (3,)


def test_stacked_calls_leave_the_checked_kernels_compile_switched_off():
    """Kernels compiled only through ``call_compiling`` raise TypeError at once for types they
    were not compiled for; a kernel compiled as a callee of another would compile again on every
    such call (~0.6 ms each time, for stacked params reaching a fast lane)."""
    from fastnn._kernels import fused, network

    plain = fnn.init(NET)
    x, y = _batch(np.float32)
    fnn.forward(NET, plain, x[:2])
    fnn.grad(NET, plain, x, y)
    stacked = fnn.init(NET, members=2)
    fnn.forward(NET, stacked, x[:2])
    fnn.grad(NET, stacked, x, y)
    opt = fnn.sgd(0.1)
    fnn.train_step(NET, opt, stacked, fnn.init_state(opt, stacked), x, y)
    for kernel in (network.forward_rows_checked_into, fused.fused_grad_checked_into):
        assert kernel.signatures and not kernel._can_compile


def test_a_stacked_training_loop_never_writes_over_params_the_caller_keeps():
    opt = fnn.adam(lr=0.1)
    params = fnn.init(NET, members=5)
    state = fnn.init_state(opt, params)
    x, y = _batch(np.float32, 5)
    kept, copies = [], []
    for _ in range(6):  # the step's buffers cycle: any the caller holds must be left alone
        params, state, _ = fnn.train_step(NET, opt, params, state, x, y)
        kept.append(params)
        copies.append([a.copy() for a in flat(params)])
    for params_then, values in zip(kept, copies):
        assert all(np.array_equal(a, b) for a, b in zip(flat(params_then), values))
    assert len({id(p[0][0].base) for p in kept}) == 6


def test_the_next_step_checks_a_gaussian_heads_width_too():
    opt = fnn.sgd(0.1)
    params = fnn.init(NET, members=2)  # 3 outputs: no mean and log-variance pairs
    x, y = _batch(np.float32)
    params, state, _ = fnn.train_step(NET, opt, params, fnn.init_state(opt, params), x, y)
    with pytest.raises(ValueError, match="gaussian_nll"):
        fnn.train_step(NET, opt, params, state, x, y[:, :1], loss="gaussian_nll")


@pytest.mark.parametrize("per_member", [False, True])
def test_a_training_loop_on_labels_steps_each_member_as_its_own_calls(monkeypatch, per_member):
    from fastnn import stacked as stacked_module

    opt = fnn.adam(lr=0.05)
    params = fnn.init(NET, seed=9, members=3)
    x, labels = _batch(np.float32, 3 if per_member else None, labels=True)
    stacked, state = params, fnn.init_state(opt, params)
    separate = [(p, fnn.init_state(opt, p)) for p in _members(params)]
    for step in range(3):  # the second and third through the training loop's next step, unchecked
        if step == 1:
            monkeypatch.setattr(stacked_module, "_checked", None)
        stacked, state, losses = fnn.train_step(NET, opt, stacked, state, x, labels, "softmax_cross_entropy")
        for k, (p, s) in enumerate(separate):
            p, s, value = fnn.train_step(NET, opt, p, s, _part(x, k, per_member), _part(labels, k, per_member),
                                         "softmax_cross_entropy")
            separate[k] = (p, s)
            assert losses[k] == pytest.approx(value, rel=1e-5)
    assert_tree_close(stacked, fnn.stack([p for p, _ in separate]), np.float32)


def test_functions_of_one_net_point_an_ensemble_at_its_members():
    params = fnn.init(NET, members=2)
    x, y = _batch(np.float64)
    for call in (lambda: fnn.jacobian(NET, params, x), lambda: fnn.check_grad(NET, params, x, y),
                 lambda: fnn.fit_lbfgs(NET, params, x, y, max_iter=1)):
        with pytest.raises(ValueError, match=r"pass one member, fnn.member\(params, k\)"):
            call()
