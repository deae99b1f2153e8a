"""Whole-network kernels: one compiled call runs every layer of an MLP.

``params`` is a tuple of (W, b) pairs, W (n_in, n_out), b (n_out,), all C-contiguous and of one
dtype, so Numba types it as a homogeneous tuple and loops over it (one compile per depth).
``codes`` is an int64 array with one activation code per layer (see ``activations``).

Buffers (all C-contiguous, allocated by the caller, one per layer l, shape (batch, n_out_l)):
``zs`` pre-activations z_l = a_{l-1} W_l + b_l, ``acts`` activations a_l = f_l(z_l),
``deltas`` gradients flowing back. Matrix products use ``np.dot(..., out)``, which Numba sends to
SciPy's BLAS.
"""

import numpy as np

from ._config import jit
from .activations import bias_activate_into, bias_activate_inplace, chain_derivative_inplace
from .losses import loss_and_grad
from .optim import update_into


@jit
def forward_into(params, codes, x, acts):
    """acts[l] <- f_l(acts[l-1] W_l + b_l), acts[-1] read as x; the activation is applied in place."""
    h = x
    for l in range(len(params)):
        W, b = params[l]
        a = acts[l]
        np.dot(h, W, a)
        bias_activate_inplace(codes[l], a, b)
        h = a


@jit
def forward_cache_into(params, codes, x, zs, acts):
    """Forward pass that keeps what backward needs: zs[l] = z_l, acts[l] = a_l."""
    h = x
    for l in range(len(params)):
        W, b = params[l]
        np.dot(h, W, zs[l])
        bias_activate_into(codes[l], zs[l], b, acts[l])
        h = acts[l]


@jit
def backward_into(params, codes, x, zs, acts, deltas, grads, dx, need_dx):
    """Reverse pass. On entry deltas[-1] holds dL/da_L; on exit grads holds dL/dW, dL/db.

    Per layer, from the last: dz = dL/da * f'(z) (in place in deltas[l]);
    dL/dW = a_{l-1}^T dz;  dL/db = sum over the batch of dz;  dL/da_{l-1} = dz W^T.
    dL/dx is written into ``dx`` only when ``need_dx`` (it costs one more GEMM).
    """
    for l in range(len(params) - 1, -1, -1):
        W = params[l][0]
        gW, gb = grads[l]
        d = deltas[l]
        chain_derivative_inplace(codes[l], zs[l], acts[l], d)
        h = x if l == 0 else acts[l - 1]
        np.dot(h.T, d, gW)
        _column_sums_into(d, gb)
        if l > 0:
            np.dot(d, W.T, deltas[l - 1])
        elif need_dx:
            np.dot(d, W.T, dx)


@jit
def _column_sums_into(d, out):
    """out[j] = sum_i d[i, j], row by row so the inner loop runs over contiguous memory."""
    out[:] = 0
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            out[j] += d[i, j]


@jit
def grad_into(params, codes, loss_code, x, target, labels, zs, acts, deltas, grads):
    """Forward, loss and backward in one call; returns the mean loss, fills ``grads``."""
    forward_cache_into(params, codes, x, zs, acts)
    last = len(params) - 1
    loss = loss_and_grad(loss_code, acts[last], target, labels, deltas[last])
    backward_into(params, codes, x, zs, acts, deltas, grads, x, False)
    return loss


@jit
def train_step_into(params, codes, loss_code, batch, buffers, opt_code, hp, slots, out):
    """Fused forward + loss + backward + optimizer update; returns the loss before the update.

    batch = (x, target, labels); buffers = (zs, acts, deltas, grads);
    out = (params_out, slots_out) receives the updated params and optimizer slots.
    """
    x, target, labels = batch
    zs, acts, deltas, grads = buffers
    loss = grad_into(params, codes, loss_code, x, target, labels, zs, acts, deltas, grads)
    update_into(opt_code, hp, params, grads, slots, out[0], out[1])
    return loss


@jit
def train_batches_inplace(current, spare, codes, loss_code, data, order, first, hps, works, grads, opt_code):
    """Mini-batch training: batches first, first + 1, ... of ``order``, one per row of ``hps``.

    data = (x, target, labels) for the whole training set (the unused one an empty placeholder);
    batch s takes the samples order[(first + s) * size : (first + s + 1) * size], size = the batch
    buffers' row count, gathered into a workspace; the final, shorter batch uses the second one.
    works = (full, last), each (xb, tb, lb, zs, acts, deltas).

    ``current`` and ``spare`` are (params, slots) pairs owned by the caller. Each update reads one
    and writes the other, so its outputs never alias its inputs: only then does LLVM vectorise the
    update loops (5.3k Adam params: 3 us, against 11 us updating in place). After an odd number of
    steps the newest values are in ``spare``. Returns (sum over batches of mean loss * batch rows,
    rows seen, steps taken); stops after the first batch whose loss is not finite.
    """
    x, target, labels = data
    size = works[0][0].shape[0]
    n = order.shape[0]
    total = 0.0
    seen = 0
    steps = 0
    for s in range(hps.shape[0]):
        lo = (first + s) * size
        rows = min(size, n - lo)
        xb, tb, lb, zs, acts, deltas = works[0] if rows == size else works[1]
        for i in range(rows):
            j = order[lo + i]
            xb[i, :] = x[j, :]
            if tb.shape[0]:
                tb[i, :] = target[j, :]
            if lb.shape[0]:
                lb[i] = labels[j]
        src, dst = (current, spare) if s % 2 == 0 else (spare, current)
        loss = grad_into(src[0], codes, loss_code, xb, tb, lb, zs, acts, deltas, grads)
        update_into(opt_code, hps[s], src[0], grads, src[1], dst[0], dst[1])
        total += loss * rows
        seen += rows
        steps += 1
        if not np.isfinite(loss):
            break
    return total, seen, steps
