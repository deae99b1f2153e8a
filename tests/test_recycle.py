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
