"""A fused net's train_step on a large batch, split over two threads (``fastnn/_threads.py``).

The thresholds are lowered so that small nets and batches take the split: rows that halve
unevenly, a first half of no rows, both loss forms, SGD and Adam, both dtypes.
"""

import multiprocessing
import threading

import numba
import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from fastnn import _threads

from conftest import DTYPES, assert_tree_close, flat

pytestmark = pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2,
                                reason="needs two CPUs")  # the project's CI machine has two


@pytest.fixture
def two_threads():
    before = fnn.get_num_threads()["numba"]
    fnn.set_num_threads(2)
    yield
    fnn.set_num_threads(before)


@pytest.fixture
def split_everything(monkeypatch, two_threads):
    """Every batch splits; records which threads computed halves, and their row counts."""
    monkeypatch.setattr(_threads, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(_threads, "SPLIT_MIN_ROWS", 1)
    calls = []
    half_grad = _threads._half_grad

    def recording(net, params, x, loss_in, lo, hi, sets):
        calls.append((threading.get_ident(), hi - lo))
        return half_grad(net, params, x, loss_in, lo, hi, sets)

    monkeypatch.setattr(_threads, "_half_grad", recording)
    return calls


def _problem(dtype, loss, rows, seed=0):
    net = fnn.mlp([5, 17, 3], activation="tanh")
    params = fnn.init(net, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 5)).astype(dtype)
    y = rng.integers(0, 3, size=rows) if loss == "softmax_cross_entropy" else rng.normal(size=(rows, 3)).astype(dtype)
    return net, params, x, y


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("opt", [fnn.sgd(0.1, momentum=0.9), fnn.adam(0.01)], ids=["sgd", "adam"])
@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
@pytest.mark.parametrize("rows", [1, 3, 34])
def test_split_steps_agree_with_the_reference(split_everything, dtype, opt, loss, rows):
    net, params, x, y = _problem(dtype, loss, rows)
    state = ref_state = fnn.init_state(opt, params)
    ref_params = params
    for _ in range(3):  # a loop: each step on the previous step's results
        params, state, value = fnn.train_step(net, opt, params, state, x, y, loss)
        ref_params, ref_state, ref_value = ref.train_step(net, opt, ref_params, ref_state, x, y, loss)
        assert_tree_close(params, ref_params, dtype)
        for moment, ref_moment in zip(state[1:], ref_state[1:]):
            assert (moment is None) == (ref_moment is None)
            if moment is not None:
                assert_tree_close(moment, ref_moment, dtype)
        np.testing.assert_allclose(value, ref_value, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert state.count == 3
    main = threading.get_ident()
    assert [n for t, n in split_everything if t == main] == [rows // 2] * 3
    assert [n for t, n in split_everything if t != main] == [rows - rows // 2] * 3  # on the worker


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
@pytest.mark.parametrize("rows", [1, 34])
def test_split_grad_agrees_with_the_reference_and_with_train_step(split_everything, dtype, loss, rows):
    """grad splits as train_step does, and its halves are summed by the same kernel: train_step
    equals grad followed by step to the last bit."""
    net, params, x, y = _problem(dtype, loss, rows)
    value, grads = fnn.grad(net, params, x, y, loss)
    ref_value, ref_grads = ref.grad(net, params, x, y, loss)
    assert_tree_close(grads, ref_grads, dtype)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert len(split_everything) == 2
    opt = fnn.adam(0.01)
    state = fnn.init_state(opt, params)
    stepped, _, step_value = fnn.train_step(net, opt, params, state, x, y, loss)
    assert_tree_close(stepped, fnn.step(opt, params, grads, state)[0], dtype, rtol=0, atol=0)
    assert step_value == value


def _arrays(result):
    """The params' and the moments' arrays of a train_step's result."""
    params, state, _ = result
    return flat(params) + [a for moment in state[1:] if moment is not None for a in flat(moment)]


def test_split_steps_are_deterministic_and_match_one_thread_to_rounding(split_everything):
    net, params, x, y = _problem(np.float32, "mse", 301)
    opt = fnn.adam(0.01)
    state = fnn.init_state(opt, params)
    first = fnn.train_step(net, opt, params, state, x, y)
    again = fnn.train_step(net, opt, params, state, x, y)
    assert len(_arrays(first)) == 12  # W, b of two layers, and Adam's two moments of them
    assert all(np.array_equal(a, b) for a, b in zip(_arrays(first), _arrays(again))) and first[2] == again[2]
    fnn.set_num_threads(1)
    calls = len(split_everything)
    one = fnn.train_step(net, opt, params, state, x, y)
    assert len(split_everything) == calls  # one thread: no split
    assert_tree_close(first[0], one[0], np.float32)
    assert not all(np.array_equal(a, b) for a, b in zip(flat(first[0]), flat(one[0])))  # another sum order


def test_small_work_takes_one_thread(two_threads, monkeypatch):
    """Below SPLIT_MIN_WORK (rows x weights) a step never splits, whatever the thread count."""
    calls = []
    monkeypatch.setattr(_threads, "split_grad", lambda *a: calls.append(a))
    net, params, x, y = _problem(np.float32, "mse", 64)
    assert 64 * net._weights < _threads.SPLIT_MIN_WORK
    fnn.train_step(net, fnn.sgd(0.1), params, fnn.init_state(fnn.sgd(0.1), params), x, y)
    assert not calls and not _threads.splits(net, 64)
    rows = -(-_threads.SPLIT_MIN_WORK // net._weights)
    assert _threads.splits(net, rows) and not _threads.splits(net, rows - 1)


def _step_in_child(queue):
    net, params, x, y = _problem(np.float64, "mse", 40)
    opt = fnn.sgd(0.1)
    out = fnn.train_step(net, opt, params, fnn.init_state(opt, params), x, y)
    queue.put(float(out[2]))


def test_a_forked_child_gets_a_worker_of_its_own(split_everything):
    """The worker thread does not survive fork: a child of a process that has split a step makes
    its own, rather than waiting forever on the parent's."""
    net, params, x, y = _problem(np.float64, "mse", 40)
    opt = fnn.sgd(0.1)
    expected = fnn.train_step(net, opt, params, fnn.init_state(opt, params), x, y)[2]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_step_in_child, args=(queue,))
    child.start()
    child.join(timeout=120)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child's split step did not finish")
    assert child.exitcode == 0 and queue.get(timeout=5) == expected


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", ["mse", "softmax_cross_entropy"])
def test_split_fit_is_a_loop_of_split_train_steps(split_everything, monkeypatch, dtype, loss):
    """fit splits its batches as train_step does (the short last batch of 8 rows stays on one
    thread, below SPLIT_MIN_ROWS here): the same bits as train_step over fnn.batches, and the
    one-thread fit to rounding."""
    monkeypatch.setattr(_threads, "SPLIT_MIN_ROWS", 10)
    net, params, x, y = _problem(dtype, loss, 40)
    opt = fnn.adam(0.01)
    fitted, history = fnn.fit(net, params, x, y, loss=loss, optimizer=opt, epochs=1, batch_size=16, seed=3,
                              progress=False)
    split_rows = [n for _, n in split_everything]
    assert sorted(split_rows) == [8, 8, 8, 8]  # two batches of 16 split, the batch of 8 not
    looped, state, values = params, fnn.init_state(opt, params), []
    for xb, yb in fnn.batches(x, y, 16, shuffle=True, seed=3):
        looped, state, value = fnn.train_step(net, opt, looped, state, xb, yb, loss)
        values.append(value * len(xb))
    assert_tree_close(fitted, looped, dtype, rtol=0, atol=0)
    assert history["loss"][0] == pytest.approx(sum(values) / 40, rel=1e-12)
    fnn.set_num_threads(1)
    one_thread, _ = fnn.fit(net, params, x, y, loss=loss, optimizer=opt, epochs=1, batch_size=16, seed=3,
                            progress=False)
    assert_tree_close(fitted, one_thread, dtype)


@pytest.mark.parametrize("members", [2, 5, 16])
def test_an_ensembles_members_split_over_two_threads_as_one_thread_steps_them(monkeypatch, two_threads, members):
    net = fnn.mlp([4, 7, 3], activation="tanh")
    opt = fnn.adam(lr=0.05)
    params = fnn.init(net, seed=1, members=members)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(members, 6, 4)).astype(np.float32), rng.normal(size=(members, 6, 3)).astype(np.float32)

    def two_steps():
        p, s = params, fnn.init_state(opt, params)
        for _ in range(2):  # the second through the training loop's next step
            p, s, losses = fnn.train_step(net, opt, p, s, x, y)
        return p, s, losses

    fnn.set_num_threads(1)
    alone = two_steps()
    fnn.set_num_threads(2)
    monkeypatch.setattr(_threads, "SPLIT_MIN_WORK", 0)
    ranges = []
    run_halves = _threads.run_halves

    def recording(work, count):
        def recorded(first, last):
            ranges.append((threading.get_ident(), first, last))
            work(first, last)
        run_halves(recorded, count)

    monkeypatch.setattr(_threads, "run_halves", recording)
    split = two_steps()
    assert sorted(r[1:] for r in ranges) == [(0, members // 2)] * 2 + [(members // 2, members)] * 2
    assert len({r[0] for r in ranges}) == 2
    for a, b in zip(flat(alone[0]) + flat(alone[1].exp_avg), flat(split[0]) + flat(split[1].exp_avg)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(alone[2], split[2])
