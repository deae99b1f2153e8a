"""Recycled output memory: reused only when nothing can see the old array any more."""

import gc

import numpy as np
import pytest

import fastnn as fnn
from fastnn import _buffers as _recycle

SHAPE = (512, 1024)  # 2 MiB of float32: above MIN_BYTES
assert np.prod(SHAPE) * 4 >= _recycle.MIN_BYTES


@pytest.fixture(autouse=True)
def empty_pool():
    _recycle._spare.clear()
    _recycle._spare_bytes = 0
    yield
    _recycle._spare.clear()
    _recycle._spare_bytes = 0


def test_reference_counts_are_trusted_on_this_interpreter():
    assert _recycle._free_refs is not None


def test_arrays_are_plain_writable_c_contiguous():
    a = _recycle.empty(SHAPE, np.float32)
    assert type(a) is np.ndarray and a.shape == SHAPE and a.dtype == np.float32
    assert a.flags.c_contiguous and a.flags.writeable


def test_arrays_start_on_a_cache_line_when_new_and_when_reused():
    """The optimizer's streaming stores need 64-byte aligned outputs (kernels.stream)."""
    for dtype, shape in [(np.float32, SHAPE), (np.float64, SHAPE), (np.float32, (1021, 1031))]:
        a = _recycle.empty(shape, dtype)
        assert a.ctypes.data % 64 == 0
        del a
        b = _recycle.empty(shape, dtype)
        assert b.ctypes.data % 64 == 0 and b.shape == shape and b.dtype == dtype


def test_small_arrays_are_plain_np_empty():
    a = _recycle.empty((4, 5), np.float64)
    assert a.base is None and a.shape == (4, 5)


def test_memory_of_a_dead_array_is_reused():
    a = _recycle.empty(SHAPE, np.float32)
    address = a.ctypes.data
    del a
    assert _recycle.spare_bytes() == np.prod(SHAPE) * 4 + _recycle.ALIGN  # the buffer's padding counts
    b = _recycle.empty(SHAPE, np.float32)
    assert b.ctypes.data == address and _recycle.spare_bytes() == 0


def test_other_shapes_and_dtypes_do_not_take_it():
    a = _recycle.empty(SHAPE, np.float32)
    address = a.ctypes.data
    del a
    for shape, dtype in [(SHAPE, np.float64), ((1024, 512), np.float32)]:
        assert _recycle.empty(shape, dtype).ctypes.data != address


@pytest.mark.parametrize("keep", ["view", "base", "memoryview", "cycle"])
def test_memory_still_reachable_is_never_reused(keep):
    a = _recycle.empty(SHAPE, np.float32)
    if keep == "view":
        held = a[3:]
    elif keep == "base":  # the raw buffer the array is a view of
        held = a.base
    elif keep == "memoryview":
        held = memoryview(a)
    else:  # the array dies inside the garbage collector (it sits in a cycle); a view survives
        held = a[3:]
        box = [a]
        box.append(box)
        del box
    del a
    gc.collect()
    b = _recycle.empty(SHAPE, np.float32)
    assert not np.may_share_memory(b, np.asarray(held))


def test_idle_memory_is_bounded(monkeypatch):
    one_buffer = np.prod(SHAPE) * 4 + _recycle.ALIGN  # the alignment padding counts
    monkeypatch.setattr(_recycle, "MAX_SPARE", one_buffer)
    arrays = [_recycle.empty(SHAPE, np.float32) for _ in range(3)]
    del arrays
    assert _recycle.spare_bytes() == one_buffer


def test_train_step_results_never_share_memory():
    """Chained steps on a net with a recycled-size layer: old and new params stay independent."""
    net = fnn.mlp([8, 512, 1024, 2])
    params = fnn.init(net, seed=0, dtype=np.float32)
    opt = fnn.adam(1e-3)
    state = fnn.init_state(opt, params)
    x = np.ones((4, 8), np.float32)
    y = np.zeros((4, 2), np.float32)
    kept = []
    for _ in range(4):
        params, state, _ = fnn.train_step(net, opt, params, state, x, y)
        kept.append((params[1][0].copy(), params[1][0]))
    for i, (copy, live) in enumerate(kept):
        np.testing.assert_array_equal(live, copy)  # later steps did not write into it
        for _, other in kept[i + 1:]:
            assert not np.shares_memory(live, other)
    params = state = kept = None
    assert _recycle.spare_bytes() > 0  # and with nothing kept, the memory waits for reuse


# The fused train step's output sets (FusedStepOutputs)

TINY = fnn.mlp([5, 7, 3], activation="tanh")  # fused: its arrays are tiny


def _tiny_step_inputs(opt):
    params = fnn.init(TINY, seed=1, dtype=np.float32)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(9, 5)).astype(np.float32)
    y = rng.normal(size=(9, 3)).astype(np.float32)
    return params, fnn.init_state(opt, params), x, y


def _every_array(params, state):
    return [a for pair in params for a in pair] + [a for m in state[1:] if m is not None for pair in m for a in pair]


@pytest.fixture(params=["compiled", "getrefcount"])
def free_test(request, monkeypatch):
    """A new Net like TINY whose step buffers are tested free by the compiled reader of reference
    counts (``kernels/refcounts.py``, which this interpreter must take) or by sys.getrefcount."""
    net = fnn.mlp(list(TINY.sizes), activation="tanh")
    if request.param == "getrefcount":
        monkeypatch.setattr(_recycle, "_counts_are", False)
    else:
        _recycle._find_counts_are()
        assert _recycle._counts_are, "the compiled reader of reference counts is not in use"
    return net


def test_the_fused_step_reuses_a_set_nobody_holds(free_test):
    opt = fnn.adam(1e-2)
    params, state, x, y = _tiny_step_inputs(opt)
    seen = []
    for _ in range(8):  # the usual loop: each step's inputs are dropped once it returns
        params, state, _ = fnn.train_step(free_test, opt, params, state, x, y)
        seen.append(params[0][0].ctypes.data)
    # The first step may take the checked way, whose outputs are always new; then two sets take turns.
    assert len(set(seen[2:])) == 2 and seen[2:] == seen[2:4] * 3


@pytest.mark.parametrize("members", [2, 5])
def test_nets_of_one_net_stepped_in_turns_reuse_sets_and_keep_their_values(free_test, members, monkeypatch):
    """K params of one Net stepped in turns (an ensemble trained by a loop) find their inputs
    packed and their outputs in K + 1 sets taking turns, with the values of nets stepped alone."""
    opt = fnn.adam(1e-2)
    start, _, x, y = _tiny_step_inputs(opt)
    nets = [tuple((W + 0.01 * k, b) for W, b in start) for k in range(members)]
    states = [fnn.init_state(opt, p) for p in nets]
    expected = []
    for k in range(members):  # each alone, on a Net of its own
        alone, alone_state = nets[k], states[k]
        own = fnn.mlp(list(TINY.sizes), activation="tanh")
        for _ in range(6):
            alone, alone_state, _ = fnn.train_step(own, opt, alone, alone_state, x, y)
        expected.append([a.copy() for a in _every_array(alone, alone_state)])
    for _ in range(2):  # the first rounds pack what the caller made
        for k in range(members):
            nets[k], states[k], _ = fnn.train_step(free_test, opt, nets[k], states[k], x, y)
    packs = []
    pack = _recycle.PackedSets.pack
    monkeypatch.setattr(_recycle.PackedSets, "pack", lambda self, sets: packs.append(1) or pack(self, sets))
    addresses = set()
    for _ in range(4):
        for k in range(members):
            nets[k], states[k], _ = fnn.train_step(free_test, opt, nets[k], states[k], x, y)
            addresses.add(nets[k][0][0].ctypes.data)
    assert not packs and len(addresses) == members + 1
    for k in range(members):
        for a, e in zip(_every_array(nets[k], states[k]), expected[k]):
            np.testing.assert_array_equal(a, e)


def _kept_part(keep, params, state):
    """What a caller keeps of a step's result."""
    return {"params": lambda: params, "state": lambda: state, "pair": lambda: params[1],
            "array": lambda: params[0][1], "view": lambda: params[0][0][1:],
            "memoryview": lambda: memoryview(state.exp_avg[0][0])}[keep]()


def _arrays_of(keep, held):
    """The arrays a kept part reaches."""
    if keep == "params":
        return [a for pair in held for a in pair]
    if keep == "state":
        return _every_array((), held)
    if keep == "pair":
        return list(held)
    return [np.asarray(held)]


@pytest.mark.parametrize("keep", ["params", "state", "pair", "array", "view", "memoryview"])
def test_a_fused_step_output_still_held_is_never_written_again(monkeypatch, keep, free_test):
    """Whatever part of a step's result the caller keeps keeps its values, and the results equal
    those of steps whose outputs are all new."""
    opt = fnn.adam(1e-2)
    start, state, x, y = _tiny_step_inputs(opt)
    params, kept = start, []
    for _ in range(5):
        params, state, _ = fnn.train_step(free_test, opt, params, state, x, y)
        held = _kept_part(keep, params, state)
        kept.append((held, [a.copy() for a in _arrays_of(keep, held)]))
    final = [a.copy() for a in _every_array(params, state)]
    for held, copies in kept:
        for a, c in zip(_arrays_of(keep, held), copies):
            np.testing.assert_array_equal(a, c)
    monkeypatch.setattr(_recycle, "_free_refs", None)  # as where counts cannot be trusted: all new
    net = fnn.mlp(list(TINY.sizes), activation="tanh")  # an equal Net that has no buffers yet
    params, state = start, fnn.init_state(opt, start)
    for _ in range(5):
        params, state, _ = fnn.train_step(net, opt, params, state, x, y)
    for a, b in zip(final, _every_array(params, state)):
        np.testing.assert_array_equal(a, b)


# grad's results on a fused net (the "grad" role's sets)

def test_grad_reuses_a_set_nobody_holds(free_test):
    params, _, x, y = _tiny_step_inputs(fnn.sgd(1e-2))
    seen = []
    for _ in range(8):  # a loop that drops each gradient once the next one is taken
        _, grads = fnn.grad(free_test, params, x, y)
        seen.append(grads[0][0].ctypes.data)
    assert len(set(seen[2:])) == 2 and seen[2:] == seen[2:4] * 3


@pytest.mark.parametrize("keep", ["grads", "pair", "array", "view"])
def test_a_gradient_still_held_is_never_written_again(keep, free_test):
    """Gradients of different batches, each with a part kept: every kept part keeps the values
    it had, which are those of the reference."""
    import fastnn.reference as ref
    params, _, x, y = _tiny_step_inputs(fnn.sgd(1e-2))
    kept = []
    for i in range(5):
        xi = x * (1 + i)
        _, grads = fnn.grad(free_test, params, xi, y)
        expected = ref.grad(free_test, params, xi, y)[1]
        kept.append((_gradient_part(keep, grads), _gradient_part(keep, expected)))
        del grads
    for held, expected in kept:
        for a, e in zip(_arrays_of("params" if keep == "grads" else keep, held),
                        _arrays_of("params" if keep == "grads" else keep, expected)):
            np.testing.assert_allclose(a, e, rtol=2e-4, atol=2e-6)


def _gradient_part(keep, grads):
    return {"grads": lambda: grads, "pair": lambda: grads[1], "array": lambda: grads[0][1],
            "view": lambda: grads[0][0][1:]}[keep]()
