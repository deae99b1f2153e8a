"""Optimizers: fastnn.step and fastnn.reference.step against the update rules written out here.

The expected values below are computed element by element in float64 from PyTorch's documented
algorithms, independently of both implementations under test.
"""

import math

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn import schedules
from fastnn._kernels import optim as _kopt
from conftest import DTYPES, assert_tree_close, assert_tree_dtype

N_STEPS = 3


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    params = tuple((rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=2).astype(dtype)) for _ in range(2))
    grads = [tuple((rng.normal(size=(3, 2)).astype(dtype), rng.normal(size=2).astype(dtype)) for _ in range(2))
             for _ in range(N_STEPS)]
    return params, grads


def _expected(rule, params, grads_seq, settings, lr):
    """Run ``rule`` (one scalar parameter at a time) over every element for every step."""
    out = [[a.astype(np.float64).copy() for a in pair] for pair in params]
    memory = {}
    for t, grads in enumerate(grads_seq, start=1):
        for l, pair in enumerate(out):
            for i, p in enumerate(pair):
                g = grads[l][i].astype(np.float64)
                for idx in np.ndindex(p.shape):
                    key = (l, i, idx)
                    p[idx], memory[key] = rule(p[idx], g[idx], memory.get(key), t, lr(t - 1), **settings)
    return tuple(tuple(pair) for pair in out)


def sgd_rule(p, g, buf, t, lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0):
    g = g + weight_decay * p
    if momentum:
        buf = g if buf is None else momentum * buf + (1 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def rmsprop_rule(p, g, mem, t, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    v, m, buf = mem if mem is not None else (0.0, 0.0, 0.0)
    g = g + weight_decay * p
    v = alpha * v + (1 - alpha) * g * g
    denom_sq = v
    if centered:
        m = alpha * m + (1 - alpha) * g
        denom_sq = v - m * m
    denom = math.sqrt(denom_sq) + eps
    if momentum:
        buf = momentum * buf + g / denom
        return p - lr * buf, (v, m, buf)
    return p - lr * g / denom, (v, m, buf)


def adagrad_rule(p, g, total, t, lr, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10):
    total = initial_accumulator_value if total is None else total
    g = g + weight_decay * p
    total = total + g * g
    clr = lr / (1 + (t - 1) * lr_decay)
    return p - clr * g / (math.sqrt(total) + eps), total


def adam_rule(p, g, mem, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    m, v = mem if mem is not None else (0.0, 0.0)
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = betas[0] * m + (1 - betas[0]) * g
    v = betas[1] * v + (1 - betas[1]) * g * g
    m_hat = m / (1 - betas[0] ** t)
    v_hat = v / (1 - betas[1] ** t)
    return p - lr * m_hat / (math.sqrt(v_hat) + eps), (m, v)


CASES = {
    "sgd": (fnn.sgd, sgd_rule, dict(lr=0.1)),
    "sgd-momentum": (fnn.sgd, sgd_rule, dict(lr=0.1, momentum=0.9)),
    "sgd-nesterov-wd": (fnn.sgd, sgd_rule, dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.1)),
    "sgd-dampening": (fnn.sgd, sgd_rule, dict(lr=0.05, momentum=0.7, dampening=0.3)),
    "rmsprop": (fnn.rmsprop, rmsprop_rule, dict(lr=0.01)),
    # Two moments each, through the same branch of the update kernel as adam (kernels.optim._update_array).
    "rmsprop-centered": (fnn.rmsprop, rmsprop_rule, dict(lr=0.01, centered=True)),
    "rmsprop-momentum": (fnn.rmsprop, rmsprop_rule, dict(lr=0.01, momentum=0.6)),
    "rmsprop-centered-momentum-wd": (
        fnn.rmsprop, rmsprop_rule, dict(lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.05)),
    "adagrad": (fnn.adagrad, adagrad_rule, dict(lr=0.1)),
    "adagrad-decay-wd-init": (
        fnn.adagrad, adagrad_rule, dict(lr=0.1, lr_decay=0.5, weight_decay=0.1, initial_accumulator_value=0.2)),
    "adam": (fnn.adam, adam_rule, dict(lr=0.01)),
    "adam-wd-betas": (fnn.adam, adam_rule, dict(lr=0.01, betas=(0.8, 0.9), weight_decay=0.1)),
    "adamw": (fnn.adamw, lambda *a, **k: adam_rule(*a, decoupled=True, **k), dict(lr=0.01)),
    "adamw-wd": (fnn.adamw, lambda *a, **k: adam_rule(*a, decoupled=True, **k), dict(lr=0.01, weight_decay=0.3)),
}
DEFAULT_WD = {"adamw": 1e-2}


def _run(impl, opt, params, grads_seq):
    state = fnn.init_state(opt, params)
    for grads in grads_seq:
        params, state = impl.step(opt, params, grads, state)
    return params, state


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("impl", [fnn, ref], ids=["fastnn", "reference"])
@pytest.mark.parametrize("case", list(CASES))
def test_step_follows_the_update_rule(case, impl, dtype):
    make, rule, kwargs = CASES[case]
    opt = make(**kwargs)
    params, grads_seq = _problem(dtype)
    settings = {k: v for k, v in kwargs.items() if k != "lr"}
    if make is fnn.adamw and "weight_decay" not in settings:
        settings["weight_decay"] = DEFAULT_WD["adamw"]
    expected = _expected(rule, params, grads_seq, settings, lambda count: kwargs["lr"])
    new_params, state = _run(impl, opt, params, grads_seq)
    assert state.count == N_STEPS
    assert_tree_dtype(new_params, dtype)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert_tree_close(new_params, expected, dtype, **tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES))
def test_step_state_matches_reference(case, dtype):
    make, _, kwargs = CASES[case]
    opt = make(**kwargs)
    params, grads_seq = _problem(dtype, seed=1)
    p_fast, s_fast = _run(fnn, opt, params, grads_seq)
    p_ref, s_ref = _run(ref, opt, params, grads_seq)
    assert type(s_fast) is type(s_ref)
    assert_tree_close(p_fast, p_ref, dtype)
    for field in s_fast._fields[1:]:
        a, b = getattr(s_fast, field), getattr(s_ref, field)
        assert (a is None) == (b is None), field
        if a is not None:
            assert_tree_dtype(a, dtype)
            assert_tree_close(a, b, dtype)


# A weight matrix of kernels.optim.STREAM_MIN_BYTES or more is updated through streaming stores. These
# sides make 1,052,651 elements: above the threshold in both dtypes, and not a whole number of cache
# lines, so the update also has a plain tail.
BIG = (1021, 1031)
assert BIG[0] * BIG[1] * 4 >= _kopt.STREAM_MIN_BYTES
BLOCK_ROWS = 200  # row blocks of BIG below the threshold in both dtypes
assert BLOCK_ROWS * BIG[1] * 8 < _kopt.STREAM_MIN_BYTES


def _big_problem(dtype):
    rng = np.random.default_rng(2)
    params = ((rng.normal(size=BIG).astype(dtype), rng.normal(size=BIG[1]).astype(dtype)),)
    grads = [((rng.normal(size=BIG).astype(dtype), rng.normal(size=BIG[1]).astype(dtype)),) for _ in range(2)]
    return params, grads


def _moments(state):
    return [m for m in state[1:] if m is not None]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES))
def test_large_matrices_update_bit_for_bit_as_their_row_blocks(case, dtype):
    """The update is elementwise, so a streamed matrix must get exactly what its row blocks get
    when each is small enough for the plain loop."""
    make, _, kwargs = CASES[case]
    opt = make(**kwargs)
    params, grads_seq = _big_problem(dtype)
    whole, whole_state = _run(fnn, opt, params, grads_seq)
    assert whole[0][0].ctypes.data % 64 == 0  # fastnn allocated it on a cache line: it streamed
    for lo in range(0, BIG[0], BLOCK_ROWS):
        rows = slice(lo, lo + BLOCK_ROWS)
        block, block_state = _run(fnn, opt, ((params[0][0][rows].copy(), params[0][1]),),
                                  [((g[0][0][rows].copy(), g[0][1]),) for g in grads_seq])
        np.testing.assert_array_equal(block[0][0], whole[0][0][rows])
        for m_block, m_whole in zip(_moments(block_state), _moments(whole_state)):
            np.testing.assert_array_equal(m_block[0][0], m_whole[0][0][rows])


def _offset_empty(shape, dtype, shift):
    """An uninitialised C-contiguous array that starts ``shift`` elements past a 64-byte boundary."""
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + 128, np.uint8)
    start = -raw.ctypes.data % 64 + shift * np.dtype(dtype).itemsize
    return raw[start:start + nbytes].view(dtype).reshape(shape)


@pytest.mark.parametrize("shifts", [(3, 3, 3), (0, 1, 2)], ids=["aligned-alike", "aligned-apart"])
def test_update_kernel_with_outputs_off_the_cache_lines(shifts):
    """Outputs starting alike past a line boundary take a plain head, streamed lines and a plain
    tail; outputs at different offsets cannot stream and take plain stores. Both give the
    values ``step`` gives."""
    opt = fnn.adam(1e-2)
    params, grads_seq = _big_problem(np.float32)
    state = fnn.init_state(opt, params)
    expected, expected_state = fnn.step(opt, params, grads_seq[0], state)
    from fastnn import training

    _, (code, hp, slots_in), _ = training._prepare_update(opt, params, state)
    p_out = ((_offset_empty(BIG, np.float32, shifts[0]), np.empty(BIG[1], np.float32)),)
    slots_out = tuple(((_offset_empty(BIG, np.float32, s), np.empty(BIG[1], np.float32)),) for s in shifts[1:])
    _kopt.update_into(code, hp, params, grads_seq[0], slots_in, p_out, slots_out)
    assert_tree_close(p_out, expected, np.float32, rtol=0, atol=0)
    for got, want in zip(slots_out, _moments(expected_state)):
        assert_tree_close(got, want, np.float32, rtol=0, atol=0)


@pytest.mark.parametrize("impl", [fnn, ref], ids=["fastnn", "reference"])
def test_learning_rate_schedule_is_called_with_the_update_count(impl):
    calls = []

    def schedule(count):
        calls.append(count)
        return 0.1 / (1 + count)

    params, grads_seq = _problem(np.float64)
    new_params, _ = _run(impl, fnn.sgd(lr=schedule), params, grads_seq)
    assert calls == list(range(N_STEPS))
    expected = _expected(sgd_rule, params, grads_seq, {}, lambda count: 0.1 / (1 + count))
    assert_tree_close(new_params, expected, np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("opt", [fnn.sgd(0.1, momentum=0.9), fnn.adam(1e-2), fnn.rmsprop(centered=True)],
                         ids=["sgd", "adam", "rmsprop"])
def test_train_step_equals_grad_then_step(opt, dtype):
    net = fnn.mlp([3, 6, 2], activation="tanh")
    params = fnn.init(net, seed=0, dtype=dtype)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(5, 2))
    state = fnn.init_state(opt, params)
    for _ in range(3):
        p1, s1, loss = fnn.train_step(net, opt, params, state, x, y, loss="huber")
        value, grads = fnn.grad(net, params, x, y, loss="huber")
        p2, s2 = fnn.step(opt, params, grads, state)
        p3, s3, loss3 = ref.train_step(net, opt, params, state, x, y, loss="huber")
        assert loss == pytest.approx(value, rel=1e-12)
        assert loss == pytest.approx(loss3, rel=1e-5 if dtype == np.float32 else 1e-12)
        assert_tree_close(p1, p2, dtype, rtol=0, atol=0)
        assert_tree_close(p1, p3, dtype)
        assert_tree_dtype(p1, dtype)
        assert_tree_dtype([pair for m in s1[1:] if m is not None for pair in m], dtype)
        assert s1.count == s2.count == s3.count
        params, state = p1, s1


def test_training_reduces_the_loss():
    """A few hundred fused steps fit a smooth function: the loss falls by a large factor."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=(64, 1))
    y = np.sin(x)
    net = fnn.mlp([1, 16, 1], activation="tanh")
    params = fnn.init(net, seed=0, dtype=np.float64)
    opt = fnn.adam(lr=0.02)
    state = fnn.init_state(opt, params)
    first = None
    for _ in range(300):
        params, state, loss = fnn.train_step(net, opt, params, state, x, y)
        first = loss if first is None else first
    assert loss < first / 20


def test_optimizer_settings_and_torch_defaults():
    opt = fnn.adamw()
    assert (opt.name, opt.lr, opt.betas, opt.eps, opt.weight_decay) == ("adamw", 1e-3, (0.9, 0.999), 1e-8, 1e-2)
    assert fnn.rmsprop().alpha == 0.99 and fnn.rmsprop().lr == 1e-2
    assert fnn.adagrad().eps == 1e-10
    with pytest.raises(AttributeError, match="no setting"):
        fnn.sgd(0.1).betas
    assert hash(fnn.adam()) == hash(fnn.adam())


def _clipped(grads_seq, clip):
    """Each step's grads scaled by min(1, clip / (global L2 norm + 1e-6)), in float64."""
    out = []
    for grads in grads_seq:
        norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for pair in grads for g in pair))
        scale = min(1.0, clip / (norm + 1e-6))
        out.append(tuple(tuple(g.astype(np.float64) * scale for g in pair) for pair in grads))
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("impl", [fnn, ref], ids=["fastnn", "reference"])
@pytest.mark.parametrize("clip", [0.5, 1e3], ids=["clipping", "norm-below-clip"])
@pytest.mark.parametrize("case", ["sgd-momentum", "adam-wd-betas", "adamw-wd"])
def test_clip_norm_scales_gradients_to_the_global_norm_first(case, clip, impl, dtype):
    make, rule, kwargs = CASES[case]
    opt = make(clip_norm=clip, **kwargs)
    params, grads_seq = _problem(dtype, seed=2)
    settings = {k: v for k, v in kwargs.items() if k != "lr"}
    expected = _expected(rule, params, _clipped(grads_seq, clip), settings, lambda count: kwargs["lr"])
    new_params, _ = _run(impl, opt, params, grads_seq)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    assert_tree_close(new_params, expected, dtype, **tol)
    if clip > 100:  # a generous clip changes nothing
        unclipped, _ = _run(impl, make(**kwargs), params, grads_seq)
        assert_tree_close(new_params, unclipped, dtype, rtol=0, atol=0)


SCHEDULES = {
    # name: (schedule, the formula written out for update count c)
    "constant": (schedules.constant(0.3), lambda c: 0.3),
    "step_decay": (schedules.step_decay(0.4, step_size=3, gamma=0.5), lambda c: 0.4 * 0.5 ** (c // 3)),
    "exponential": (schedules.exponential(0.2, gamma=0.9), lambda c: 0.2 * 0.9**c),
    "cosine": (schedules.cosine(0.1, total_steps=8, min_lr=0.01),
               lambda c: 0.01 + 0.09 * (1 + math.cos(math.pi * min(c, 8) / 8)) / 2),
    "warmup_cosine": (schedules.warmup_cosine(0.1, warmup_steps=4, total_steps=10),
                      lambda c: 0.1 * (c + 1) / 4 if c < 4 else 0.05 * (1 + math.cos(math.pi * min(c - 4, 6) / 6))),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_follow_their_formulas_for_ints_and_arrays(name):
    schedule, formula = SCHEDULES[name]
    counts = np.arange(15)
    expected = [formula(int(c)) for c in counts]
    assert [schedule(int(c)) for c in counts] == pytest.approx(expected, rel=1e-12, abs=1e-15)
    np.testing.assert_allclose(schedule(counts), expected, rtol=1e-12, atol=1e-15)
    assert isinstance(schedule(3), float)


@pytest.mark.parametrize("impl", [fnn, ref], ids=["fastnn", "reference"])
def test_schedule_as_lr_drives_the_updates(impl):
    schedule, formula = SCHEDULES["warmup_cosine"]
    params, grads_seq = _problem(np.float64)
    new_params, _ = _run(impl, fnn.sgd(lr=schedule), params, grads_seq)
    expected = _expected(sgd_rule, params, grads_seq, {}, formula)
    assert_tree_close(new_params, expected, np.float64)


@pytest.mark.parametrize("make, kwargs, error, match", [
    (schedules.step_decay, dict(lr=0.1, step_size=0), ValueError, "step_size must be a positive int"),
    (schedules.step_decay, dict(lr=0.1, step_size=2.5), TypeError, "step_size must be a positive int"),
    (schedules.exponential, dict(lr=0.1, gamma=1.5), ValueError, r"gamma must lie in \(0, 1\]"),
    (schedules.cosine, dict(lr=-1, total_steps=5), ValueError, "lr must be a positive"),
    (schedules.cosine, dict(lr=0.1, total_steps=5, min_lr=0.2), ValueError, "min_lr must not exceed lr"),
    (schedules.warmup_cosine, dict(lr=0.1, warmup_steps=5, total_steps=5), ValueError, "must exceed warmup"),
    (fnn.adam, dict(clip_norm=0), ValueError, "clip_norm must be a positive"),
    (fnn.sgd, dict(lr=0.1, clip_norm="1"), TypeError, "clip_norm must be a positive number"),
])
def test_schedule_and_clip_arguments_are_checked(make, kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


@pytest.mark.parametrize("opt", [fnn.adam(lr=0.05), fnn.sgd(lr=schedules.exponential(0.5, 0.9), momentum=0.5)],
                         ids=["adam", "sgd-schedule"])
def test_hyperparameters_follow_the_count_across_table_refills(opt):
    """fastnn computes hyperparameters 64 updates at a time: jumps in count, backwards and past the
    table's end, in both dtypes in turn, must each get their own update's values."""
    for count in [0, 63, 64, 65, 1000, 5, 64]:
        for dtype in DTYPES:
            params, grads_seq = _problem(dtype)
            state = fnn.init_state(opt, params)._replace(count=count)
            p_fast, s_fast = fnn.step(opt, params, grads_seq[0], state)
            p_ref, _ = ref.step(opt, params, grads_seq[0], state)
            assert s_fast.count == count + 1
            assert_tree_close(p_fast, p_ref, dtype)
