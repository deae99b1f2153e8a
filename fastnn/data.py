"""Mini-batches and data splits.

``batches`` yields (x, y) mini-batches for a hand-written training loop; ``fit`` draws the same
per-epoch sample order from ``epoch_order``, so a loop over ``batches`` with the same seed sees the
same batches as ``fit``. The random generator is a seed or a ``numpy.random.Generator`` passed in,
never global state.
"""

import math

import numpy as np

from . import _checks

__all__ = ["batches"]


def epoch_order(rng, n, shuffle):
    """The order in which one epoch visits the n samples: a fresh permutation, or 0..n-1."""
    return rng.permutation(n) if shuffle else np.arange(n)


def batch_count(n, batch_size, drop_last):
    """Batches per epoch over n samples (a final short batch counts unless drop_last)."""
    return n // batch_size if drop_last else math.ceil(n / batch_size)


def batches(x, y, batch_size, shuffle=True, seed=0, drop_last=False):
    """Yield (x_batch, y_batch) pairs covering every sample exactly once (one epoch).

    x: (n, ...) and y: (n, ...) array-likes with the same first axis. With ``shuffle`` the order is
    a permutation drawn from ``seed`` (an int, a Generator, or None for fresh entropy): the same
    seed gives the same batches. The final batch is shorter when batch_size does not divide n,
    unless ``drop_last``, which skips it. Batches are copies; x and y are never written.
    """
    x = _checks.real_array(x, "x")
    y = _checks.real_array(y, "y")
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must hold the same number of samples along their first axis; got "
                         f"shapes {x.shape} and {y.shape}")
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    order = epoch_order(_checks.rng_from(seed, allow_none=True), x.shape[0], shuffle)
    for k in range(batch_count(x.shape[0], batch_size, drop_last)):
        idx = order[k * batch_size:(k + 1) * batch_size]
        yield x[idx], y[idx]


def _validation_count(n, fraction):
    """How many of n samples ``validation_split = fraction`` holds out (at least one, not all)."""
    if not _checks.is_real(fraction):
        raise TypeError(f"validation_split must be a number in (0, 1); got {type(fraction).__name__}")
    if not 0 < fraction < 1:
        raise ValueError(f"validation_split must lie in (0, 1); got {fraction!r}")
    n_val = int(round(n * fraction))
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split {fraction} of {n} samples leaves {n - n_val} for training and "
                         f"{n_val} for validation; both need at least one")
    return n_val


def held_out_last(n, fraction):
    """A boolean mask of n samples holding out the last ``fraction`` of them for validation.

    The split takes the last samples before any shuffling (as Keras' validation_split does), so it
    is deterministic; shuffle beforehand if the data are ordered (or use ``held_out_shuffled``).
    """
    held = np.zeros(n, dtype=bool)
    held[n - _validation_count(n, fraction):] = True
    return held


def held_out_shuffled(y, fraction, rng, stratify=False):
    """A boolean mask over the samples of y holding out a random ``fraction`` of them, drawn from
    ``rng``; with ``stratify`` (y holds class labels) each class gives the same share, rounded, as
    long as that leaves the training part every class."""
    n = y.shape[0]
    n_val = _validation_count(n, fraction)
    order = rng.permutation(n)
    if stratify:
        held = []
        for c in np.unique(y):
            members = order[y[order] == c]
            take = min(int(round(members.size * fraction)), members.size - 1)
            held.append(members[:take])
        chosen = np.concatenate(held)
        if chosen.size == 0:  # every class too small to share: an unstratified draw
            chosen = order[:n_val]
    else:
        chosen = order[:n_val]
    val = np.zeros(n, dtype=bool)
    val[chosen] = True
    return val


def split(held, *arrays):
    """(the arrays' rows where ``held`` is False, those where it is True), each part a tuple in the
    arrays' order, both parts keeping the samples' order; None stays None."""
    keep = ~held
    return (tuple(None if a is None else a[keep] for a in arrays),
            tuple(None if a is None else a[held] for a in arrays))
