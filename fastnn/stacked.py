"""Stacked params (an ensemble, ``init(..., members=K)``) through one compiled call each:
``forward``, ``predict`` (one call per chunk), ``grad``, ``backward``, ``train_step`` and
``step`` of the public API hand stacked params here.

Every function checks the stacked arrays against the net (W (K, fan_in, fan_out), b (K,
fan_out)) and the batch as ``fastnn.ensemble.member_batches`` reads it (shared by every member, or
each member's own rows behind a leading K axis), then makes one call of a kernel of
``kernels/ensemble.py``, which runs the one-network kernels on each member's views in turn. So
member k's results equal a call on ``member(params, k)`` to rounding (the same kernels; the fused
gradient on small nets, BLAS on large ones), with results stacked: losses (K,), grads, params and
moments with the leading K axis, outputs (K, batch, n_out).

Why one call: stepping 16 tiny nets one by one pays the Python side of ``train_step`` (checks,
buffers, dispatch) 16 times; here it is paid once, and the members' arithmetic runs back to back.
"""

from threading import get_ident as _get_ident

import numpy as np

from ._kernels import ensemble as _kens

from . import _checks, _threads
from ._buffers import empty_like_params, fused_step_sets, layer_buffers, workspace, zeros_like_params
from ._codes import (activation_codes, hyperparameters, kernel_code, kernel_slots, plain_loss_inputs, row_layout,
                     state_with, used_moments)
from ._entry import PLAIN_FLAGS
from .ensemble import member_batches, members_of
from .network import ROWS_WITHOUT_BLAS, fused, prepare_batch
from .optim import check_optimizer, check_state

__all__ = ["forward", "predict", "grad", "backward", "train_step", "step"]

_ndarray, _int64 = np.ndarray, np.dtype(np.int64)


def _checked(net, params):
    """(params kernel-ready, dtype, K, member 0's params) for stacked params of ``net``."""
    count = members_of(params)
    params, dtype = _checks.check_stacked_params(net, params, count)
    return params, dtype, count, tuple((W[0], b[0]) for W, b in params)


def _rows(a, per_member):
    """a's rows as the kernels take them: each member's after the other's, (K * batch, ...) C."""
    if a is None or not per_member:
        return a
    return np.ascontiguousarray(a).reshape((a.shape[0] * a.shape[1],) + a.shape[2:])


def _batch(net, first, count, x, y_true, loss, sample_weight):
    """(x rows, loss inputs, shift) for the ensemble kernels' ``data``: shift 0 when every member
    takes the whole batch, else the rows of each member's own batch."""
    per_member, (x, y_true, weights) = member_batches(count, loss, x, y_true, sample_weight)
    _, _, x2d, loss_in = prepare_batch(net, first, _rows(x, per_member), _rows(y_true, per_member), loss,
                                       fused(net), _rows(weights, per_member))
    if not per_member:
        return x2d, loss_in, 0
    rows = x.shape[1]
    if weights is not None and rows and not np.all(np.any(np.asarray(weights) > 0, axis=1)):
        raise ValueError("sample_weight gives some member only zero weights; every member needs one weight > 0")
    return x2d, loss_in, rows


def train_step(net, opt, params, state, x, y_true, loss="mse", sample_weight=None):
    """``fastnn.train_step`` of every member in one compiled call: (params, state, losses (K,)).

    On a fused net the params and moments go in packed in one buffer and come out as views of
    another (``_buffers.FusedStepSets`` of the ensemble's layout), as one net's fused step takes
    them: a training loop cycles through a few buffers and passes two arrays per step."""
    if sample_weight is None:
        result = _next_step(net, opt, params, state, x, y_true, loss)
        if result is not None:
            return result
    params, dtype, count, first = _checked(net, params)
    check_optimizer(opt)
    data = _batch(net, first, count, x, y_true, loss, sample_weight)
    state = check_state(opt, params, state)
    codes = activation_codes(net, dtype)
    if not fused(net):
        slots_in, slots_out = kernel_slots(state)
        params_out, losses = empty_like_params(params), np.empty(count)
        work = workspace(net, first, data[2] or data[0].shape[0], dtype) + (losses,)
        _kens.members_train_step_into(params, codes, data, work, (kernel_code(opt), hyperparameters(
            opt, state.count, dtype), slots_in), (params_out, slots_out))
        return params_out, state_with(state, state.count + 1, slots_out), losses
    slots_in = used_moments(state)
    sets = fused_step_sets(net, dtype, len(slots_in), "step", count)
    packed = sets.packed(params, slots_in)
    if packed is None:
        packed = sets.layout.pack((params,) + slots_in)
    result, packed_out = _packed_step(net, sets, packed, opt, state, data)
    if sample_weight is None:  # the cases _next_step takes
        net.__dict__["_last_members_step"] = (opt, result[0], result[1], _get_ident(), sets, packed_out)
    return result


def _packed_step(net, sets, packed, opt, state, data):
    """((params, state, losses), the results' buffer): the fused members' step on the packed
    params and moments, into a buffer from ``sets.take()``; the members split over two threads
    when ``_threads.splits_members`` says so (each member's numbers are the same either way)."""
    layout = sets.layout
    count = layout.members
    packed_out, (params_out, slots_out) = sets.take()
    grads = fused_step_sets(net, layout.dtype, 0, "grad").layout  # one member's gradient: its layout
    losses = np.empty(count)
    update = (kernel_code(opt), hyperparameters(opt, state[0], layout.dtype))

    def step(first, last):
        _kens.fused_members_train_step_packed_into((layout.packing, layout.strides, first), packed, net._codes, data,
                                                   (grads.packing, grads.size, losses[first:last]), update, packed_out)

    rows = data[2] or data[0].shape[0]
    if _threads.splits_members(net, count, rows):
        _threads.run_halves(step, count)
    else:
        step(0, count)
    return (params_out, state_with(state, state[0] + 1, slots_out), losses), packed_out


def _next_step(net, opt, params, state, x, y_true, loss):
    """train_step on the results of the last one (same net, optimizer and thread: a training
    loop) without checking params and state again, or None: then the checked way runs. Only the
    batch is screened here, for what the kernel would index: plain arrays, x of the params'
    dtype (rows, n_in) shared or (K, rows, n_in) each member's, and targets alike: (rows, width)
    of the dtype, or int64 labels (rows,) in [0, n_out) for softmax_cross_entropy, with the K axis
    when x has it. Sample weights take the checked way. Tiny net, K = 16, Adam: ~45 -> ~5 us of
    Python a step."""
    last = net.__dict__.get("_last_members_step")
    if last is None:
        return None
    last_opt, last_params, last_state, thread, sets, packed = last
    if params is not last_params or state is not last_state or opt is not last_opt or _get_ident() != thread:
        return None
    if type(x) is not _ndarray or type(y_true) is not _ndarray:
        return None
    dtype, count = sets.layout.dtype, sets.layout.members
    n_in, n_out = net.sizes[0], net.sizes[-1]
    labels = y_true.dtype is _int64 and loss == "softmax_cross_entropy"
    width = () if labels else (n_out // 2,) if loss == "gaussian_nll" else (n_out,)  # gaussian: mean, log-variance
    if (x.dtype is not dtype or (x.flags.num & PLAIN_FLAGS) != PLAIN_FLAGS
            or (y_true.flags.num & PLAIN_FLAGS) != PLAIN_FLAGS or (loss == "gaussian_nll" and n_out % 2)):
        return None
    if x.ndim == 2 and x.shape[1] == n_in and y_true.shape == (x.shape[0],) + width:
        shift = 0
    elif x.ndim == 3 and x.shape[0] == count and x.shape[2] == n_in and y_true.shape == x.shape[:2] + width:
        shift = x.shape[1]
        x, y_true = x.reshape(-1, n_in), y_true.reshape((-1,) + width)
    else:
        return None
    if labels and y_true.size and (y_true.min() < 0 or y_true.max() >= n_out):
        return None
    screened = plain_loss_inputs(loss, y_true, dtype)
    if screened is None:
        return None
    result, packed_out = _packed_step(net, sets, packed, opt, state, (x, screened[1], shift))
    net.__dict__["_last_members_step"] = (opt, result[0], result[1], thread, sets, packed_out)
    return result


def grad(net, params, x, y_true, loss="mse", sample_weight=None):
    """``fastnn.grad`` of every member in one compiled call: (losses (K,), stacked grads)."""
    params, dtype, count, first = _checked(net, params)
    data = _batch(net, first, count, x, y_true, loss, sample_weight)
    buffers, _ = workspace(net, first, data[2] or data[0].shape[0], dtype)
    grads, losses = zeros_like_params(params), np.empty(count)
    kernel = _kens.fused_members_grad_into if fused(net) else _kens.members_grad_into
    kernel(params, activation_codes(net, dtype), data, buffers, (grads, losses))
    return losses, grads


def backward(net, params, x, dy):
    """``fastnn.backward`` of every member in one compiled call: (stacked grads, dx (K, batch,
    n_in)). x and dy are shared or each member's (``member_batches``)."""
    params, dtype, count, first = _checked(net, params)
    x, dy = _checks.real_array(x, "x"), _checks.real_array(dy, "dy")
    single = x.ndim == 1
    if single:  # one sample: a batch of one row (dy (n_out,) shared or (K, n_out) each member's)
        x, dy = x[None], dy[..., None, :]
    per_member, (x, dy) = member_batches(count, "mse", x, dy, names=("x", "dy"))
    if not per_member:  # the kernel takes each member's rows
        x, dy = (np.broadcast_to(a, (count,) + a.shape) for a in (x, dy))
    x2d, _ = _checks.check_input(net, _rows(x, True), dtype)
    batch = x.shape[1]
    dy2d = _checks.check_output_grad(net, _rows(dy, True), x2d.shape[0], False, dtype)
    grads = zeros_like_params(params)
    dx = np.zeros((count, batch, net.sizes[0]), dtype)
    if batch:
        buffers, _ = workspace(net, first, batch, dtype)
        shape = (count, batch)
        _kens.members_vjp_into(params, activation_codes(net, dtype), x2d.reshape(shape + (net.sizes[0],)),
                               dy2d.reshape(shape + (net.sizes[-1],)), buffers, (grads, dx))
    return grads, (dx[:, 0] if single else dx)


def _inputs(net, params, x):
    """(params, dtype, K, x rows, single, rows each member takes, shift) for forward and predict:
    x shared or each member's (``member_batches``), its rows as the kernels take them."""
    params, dtype, count, _ = _checked(net, params)
    per_member, (x,) = member_batches(count, "mse", x)
    x2d, single = _checks.check_input(net, _rows(x, per_member), dtype)
    rows = x.shape[1] if per_member else x2d.shape[0]
    return params, dtype, count, x2d, single, rows, rows if per_member else 0


def forward(net, params, x):
    """``fastnn.forward`` of every member in one compiled call: (K, batch, n_out), or (K, n_out)
    for one sample x."""
    params, dtype, count, x2d, single, rows, shift = _inputs(net, params, x)
    out = np.empty((count, rows, net.sizes[-1]), dtype)
    if rows > ROWS_WITHOUT_BLAS:
        _kens.members_forward_into(params, activation_codes(net, dtype), x2d, shift, layer_buffers(net, rows, dtype), out)
    elif rows:  # as forward takes a few rows: without BLAS's per-call overhead
        _kens.members_forward_rows_into(params, row_layout(net, dtype)[0], x2d, shift, out)
    return out[:, 0] if single else out


def predict(net, params, x, batch_size):
    """``fastnn.predict`` of every member: ``batch_size`` rows of x (shared or each member's) at a
    time, each chunk one compiled call through BLAS, as ``predict`` takes one net's chunks."""
    params, dtype, count, x2d, single, rows, shift = _inputs(net, params, x)
    out = np.empty((count, rows, net.sizes[-1]), dtype)
    chunk = min(batch_size, rows)
    if rows:
        codes, acts = activation_codes(net, dtype), layer_buffers(net, chunk, dtype)
        x3d = x2d.reshape(count, rows, -1) if shift else x2d[None]
        for lo in range(0, rows, chunk):
            n = min(chunk, rows - lo)
            part = np.ascontiguousarray(x3d[:, lo:lo + n]).reshape(-1, net.sizes[0])
            block = np.empty((count, n, net.sizes[-1]), dtype)
            _kens.members_forward_into(params, codes, part, n if shift else 0, tuple(a[:n] for a in acts), block)
            out[:, lo:lo + n] = block
    return out[:, 0] if single else out


def step(opt, params, grads, state, prepare_update):
    """``fastnn.step`` of every member in one compiled call (gradient clipping per member);
    ``prepare_update`` is ``training._prepare_update``."""
    check_optimizer(opt)
    params, _ = _checks.check_stacked_pairs(params, members_of(params))
    grads = _checks.check_like(params, grads, "grads")
    state, (code, hp, slots_in), slots_out = prepare_update(opt, params, state)
    params_out = empty_like_params(params)
    _kens.members_update_into(code, hp, params, grads, slots_in, params_out, slots_out)
    return params_out, state_with(state, state.count + 1, slots_out)
