"""A fused net's gradient on a large batch, split over two threads; an ensemble's members too.

The fused kernels (``kernels/fused.py``) run on one thread. For a batch of at least
``SPLIT_MIN_WORK`` multiply-adds in its forward (rows x weights), when Numba's thread count
(``fastnn.set_num_threads``) is 2 or more, the batch is cut in two halves, the first on the calling
thread and the second on a worker thread, each through ``network.checked_fused_grad`` (whose
kernel releases the GIL), and ``kernels.fused.weighted_sum_into`` puts the mean gradient together as
(n_1 / n) g_1 + (n_2 / n) g_2, for ``train_step`` inside its update kernel, for ``grad``, and for
each such batch of ``fit`` (which then steps batch by batch from Python, as a loop of
``train_step`` would). The cut and the order are fixed, so results are the same from run to run
for a given thread count; they differ from one thread's by rounding.

An ensemble's stacked step of that much work in all (``splits_members``) runs half of its members
on each thread (``run_halves``): each member's numbers are the ones one thread computes.

Plain threads and a blocking wait, not a parallel loop in the kernel: on a machine whose other
core is busy, the worker's half waits for a core and the step takes about one thread's time,
where a spinning barrier waiting on a descheduled thread made a step 20x slower.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

from . import network as _network  # imported while network imports this: read at call time
from ._buffers import fused_step_sets
from ._kernels import fused as _kfused

# Below this much work, one thread: handing half a batch to the worker and back costs ~100 us on
# this 2-vCPU VM (a thread's wake-up is ~40 us each way). train_step of the narrow 32-32-32-1 tanh
# net (2080 weights), Adam, float32, two threads against one, medians: both cores free, 2048 rows
# 0.87x, 4096 1.18x, 10k 1.51x, 100k 1.96x; the other core running a busy loop, 2048 0.79x, 4096
# 0.87x, 10k 0.92x, 100k 0.96x.
SPLIT_MIN_WORK = 16_000_000  # rows x weights: 7.7k rows of the narrow net
SPLIT_MIN_ROWS = 256        # never fewer rows, however wide the net

_pool = None
_pool_pid = None
_pool_lock = threading.Lock()


def _worker():
    """The process's one worker thread (made again in a forked child, where threads do not
    survive the fork)."""
    global _pool, _pool_pid
    with _pool_lock:
        if _pool is None or _pool_pid != os.getpid():
            _pool, _pool_pid = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fastnn"), os.getpid()
        return _pool


def splits(net, rows):
    """True when a fused step of ``net`` on ``rows`` rows goes over two threads."""
    return rows >= SPLIT_MIN_ROWS and rows * net._weights >= SPLIT_MIN_WORK and numba.get_num_threads() > 1


def splits_members(net, members, rows):
    """True when a stacked fused step of ``members`` members of ``net`` on ``rows`` rows each goes
    over two threads, the members in two halves: at least 2 members and ``SPLIT_MIN_WORK`` in
    all, when ``get_num_threads()["numba"]`` is 2 or more."""
    return members > 1 and members * rows * net._weights >= SPLIT_MIN_WORK and numba.get_num_threads() > 1


def run_halves(work, count):
    """``work(0, count // 2)`` on the calling thread and ``work(count // 2, count)`` on the worker
    thread at once (each a kernel that releases the GIL), returning when both are done."""
    half = count // 2
    second = _worker().submit(work, half, count)
    work(0, half)
    second.result()


def _half_grad(net, params, x, loss_in, lo, hi, sets):
    """(mean loss, gradient) of rows lo:hi of a checked batch, the gradient in a new buffer of
    ``sets`` (a ``_buffers.PackedSets`` of one params-shaped set)."""
    code, target, labels, weights = loss_in
    part = (code, target[lo:hi], labels[lo:hi], weights[lo:hi])  # an unused one is empty, and stays so
    flat, (grads,) = sets.new()
    return _network.checked_fused_grad(net, params, x[lo:hi], part, flat, sets.packing), grads


def _shares(loss_in, half, n):
    """(n_1 / n, n_2 / n) for halves of half and n - half rows, or their shares of the weights'
    sum when the rows are weighted (each half's mean is over its own weights)."""
    weights = loss_in[3]
    if not weights.size:
        return half / n, (n - half) / n
    first, second = float(weights[:half].sum(dtype=np.float64)), float(weights[half:].sum(dtype=np.float64))
    return first / (first + second), second / (first + second)  # checked weights: not all zero


def split_grad(net, params, x, loss_in):
    """(mean loss, gradient of the first half, of the second half, (n_1 / n, n_2 / n)) of a checked
    batch (``network.prepare_batch``) of a fused net, the halves' gradients each their mean,
    computed on two threads (``kernels.fused.weighted_sum_into`` sums them); with weighted rows
    the shares are the halves' shares of the weights' sum."""
    n = x.shape[0]
    half = n // 2
    sets = fused_step_sets(net, x.dtype, 0, "grad").layout
    second = _worker().submit(_half_grad, net, params, x, loss_in, half, n, sets)
    value_1, grads_1 = _half_grad(net, params, x, loss_in, 0, half, sets)
    value_2, grads_2 = second.result()
    shares = _shares(loss_in, half, n)
    return shares[0] * value_1 + shares[1] * value_2, grads_1, grads_2, shares


def whole_grad(net, params, x, loss_in):
    """(mean loss, gradient) of a checked batch computed on two threads (``split_grad``), the
    halves summed into the first one's arrays (``kernels.fused.weighted_sum_into``)."""
    value, grads, grads_2, weights = split_grad(net, params, x, loss_in)
    _kfused.weighted_sum_into(grads, grads_2, weights)
    return value, grads
