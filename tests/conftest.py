"""Shared helpers: tolerances per dtype, target makers, and comparison of params-shaped tuples."""

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref

DTYPES = (np.float32, np.float64)

# fastnn vs reference in the same dtype: float32 differs by summation order and libm only.
TOL = {np.dtype(np.float32): dict(rtol=2e-4, atol=2e-5), np.dtype(np.float64): dict(rtol=1e-9, atol=1e-11)}

# (loss name, target kind) pairs covering every loss and both softmax target forms.
LOSS_CASES = (
    ("mse", "dense"),
    ("mae", "dense"),
    ("huber", "dense"),
    ("sigmoid_cross_entropy", "unit"),
    ("softmax_cross_entropy", "labels"),
    ("softmax_cross_entropy", "probs"),
)

IMPLEMENTATIONS = {"fastnn": fnn, "reference": ref}


@pytest.fixture
def small_blocks(monkeypatch):
    """The training kernels take batches through the network 4 rows at a time (the workspace's
    rows set the block), so small batches exercise summing the gradient over blocks."""
    from fastnn import _buffers

    monkeypatch.setattr(_buffers, "BLOCK_ROWS", 4)


@pytest.fixture(params=["fused", "blas"])
def kernel_path(request, monkeypatch):
    """Both kernel families: the fused ones, and BLAS (every net past the fused limits)."""
    from fastnn import network

    if request.param == "blas":
        monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS", 0)
        monkeypatch.setattr(network, "FUSED_MAX_WEIGHTS_WIDE", 0)
    return request.param


@pytest.fixture(params=list(IMPLEMENTATIONS), ids=list(IMPLEMENTATIONS))
def impl(request):
    """The fastnn module or fastnn.reference: both must behave the same at the boundary."""
    return IMPLEMENTATIONS[request.param]


def make_targets(kind, batch, k, rng):
    """Targets of one kind for outputs (batch, k): dense reals, [0, 1] values, labels or probabilities."""
    if kind == "dense":
        return rng.normal(size=(batch, k)) * 1.5
    if kind == "unit":
        return rng.uniform(size=(batch, k))
    if kind == "labels":
        return rng.integers(0, k, size=batch)
    p = rng.uniform(size=(batch, k)) + 0.1
    return p / p.sum(axis=1, keepdims=True)


def flat(tree):
    """All arrays of a params-shaped tuple, in order."""
    return [a for pair in tree for a in pair]


def assert_tree_close(actual, expected, dtype, **override):
    tol = dict(TOL[np.dtype(dtype)], **override)
    assert len(flat(actual)) == len(flat(expected))
    for a, e in zip(flat(actual), flat(expected)):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, **tol)


def assert_tree_dtype(tree, dtype):
    for a in flat(tree):
        assert a.dtype == np.dtype(dtype), f"{a.dtype} != {np.dtype(dtype)}"
