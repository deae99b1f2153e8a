"""forward, grad, backward and predict on the compiled path.

Each public function validates and normalises its inputs (``_checks``), takes fresh outputs and
reused scratch buffers (``_buffers``), and makes one compiled call for the whole network. Nothing
the caller passed is written: the kernels write only into arrays allocated here.

An empty batch is valid: forward returns an empty (0, n_out) array; grad returns loss 0.0 and zero
gradients (the sum over no samples), so a training loop never sees NaN from it.
"""

import numba
import numpy as np

from ._kernels import fused as _kfused
from ._kernels import network as _knet
from ._kernels import tiles as _ktiles
from ._kernels._config import call_compiling

from . import _checks, _threads
from ._buffers import fused_step_sets, layer_buffers, workspace, zeros_like_params
from ._codes import activation_codes, loss_inputs, plain_loss_inputs, row_layout
from .ensemble import is_stacked

__all__ = ["forward", "grad", "backward", "predict"]


def prepare_batch(net, params, x, y_true, loss, on_fused, sample_weight=None):
    """Validate a training batch for the fused kernels (``on_fused``, what ``fused(net)`` said)
    or the BLAS ones. Returns (params, dtype, x2d, (loss code, target, labels, weights))."""
    params, dtype = _checks.check_params(net, params)
    _checks.check_loss(loss)
    x2d, single = _checks.check_input(net, x, dtype)
    target, labels = _checks.check_targets(loss, y_true, x2d.shape[0], net.sizes[-1], single, dtype)
    weights = _checks.check_sample_weight(sample_weight, x2d.shape[0], dtype, single)
    return params, dtype, x2d, loss_inputs(loss, target, labels, dtype, on_fused, weights)


# Nets whose largest weight matrix has up to this many elements train through the fused,
# register-tiled kernels (``kernels.fused``); larger ones through BLAS. The compiled train step,
# one thread, Zen 2, Adam, fused / BLAS time in float32 (float64): 16-64-64-1 batch 32 0.80
# (1.2), 64-128-10 batch 64 0.91 (0.93), 32-32-32-1 on 10k rows 0.85 (0.97), 64-256-10 batch 128
# 0.97 (1.07), 128-256-10 1.01 (1.10), 784-256-128-10 1.22 (1.5): BLAS wins from about 16k weights,
# where OpenBLAS's cache blocking over the summed dimension starts to tell.
FUSED_MAX_WEIGHTS = 8192
# With AVX-512 (``kernels.tiles.QUADS``: row vectors by fours) and one thread, the fused kernels
# beat OpenBLAS on larger nets too. train_step, Adam, one thread, Zen 4, fused / BLAS time in
# float32 (float64): 64-256-10 batch 128 0.74-0.77 (0.90), 784-256-128-10 batch 32 0.70 (0.76),
# batch 128 0.79-0.92 (0.91), batch 1024 0.90, 512-512-512-10 batch 128 0.82 (1.08),
# 1024-1024-10 batch 256 1.10 (1.38). Not with two threads: OpenBLAS then takes both cores, where
# the fused step splits only batches of ``_threads.SPLIT_MIN_ROWS`` rows or more
# (784-256-128-10 batch 128: fused 1343 us, BLAS 947).
FUSED_MAX_WEIGHTS_WIDE = 250_000


def fused(net):
    """True when ``net`` trains through ``kernels.fused``: its largest weight matrix has up to
    FUSED_MAX_WEIGHTS elements, or up to FUSED_MAX_WEIGHTS_WIDE with AVX-512 on one thread."""
    largest = net._largest_weight
    return largest <= FUSED_MAX_WEIGHTS or (largest <= FUSED_MAX_WEIGHTS_WIDE and _ktiles.QUADS
                                            and numba.get_num_threads() == 1)


# Up to this many rows the forward pass runs row by row (``kernels.network._layer_row``); above,
# one BLAS call per layer. The measured crossover, one thread, where row by row equals BLAS: ~5
# rows on 64-128-10 relu in float32, ~3 in float64 (the tiny 16-64-64-1 net: ~8 and ~6).
ROWS_WITHOUT_BLAS = 4

_ndarray, _empty = np.ndarray, np.empty  # one global lookup each on the one-sample path
_compiled_rows = set()  # (kernel, dtype, depth, x.ndim) compiled through call_compiling


def _forward_rows(kernel, params, layout, x, out):
    """A row kernel (``row_layout``) on checked arguments, compiling it for their types if needed."""
    key = (kernel, x.dtype, len(params), x.ndim)
    if key in _compiled_rows:
        try:
            kernel(params, layout, x, out)
            return
        except TypeError:  # types the key does not tell apart (an unaligned array): compile them
            pass
    call_compiling(kernel, params, layout, x, out)
    _compiled_rows.add(key)


def _row_output(net, x):
    """A fresh output for the row kernels: (n_out,) for a 1-D x, (rows, n_out) for a 2-D one."""
    return np.empty(x.shape[:-1] + (net.sizes[-1],), x.dtype)


def compile_row_kernels(net, params, x):
    """Compile both row kernels, with and without the GIL (``row_layout``), for checked params and
    a 1-D or 2-D x of their dtype: ``warmup``'s share of the one-sample forward."""
    layout, out = row_layout(net, x.dtype)[0], _row_output(net, x)
    for kernel in (_knet.forward_rows_checked_into, _knet.forward_rows_checked_nogil_into):
        _forward_rows(kernel, params, layout, x, out)


def _few_rows(x):
    """True for a 2-D x of at most ROWS_WITHOUT_BLAS rows."""
    return x.ndim == 2 and x.shape[0] <= ROWS_WITHOUT_BLAS


def _packed_forward(net, sets, packed, x):
    """forward of one sample or a few rows on the params of the net's last fused train step
    (``training._LastStep``: its sets and packed buffer), which are views of one buffer: the
    Predictor's packed kernels on that buffer, 4 arrays to unbox instead of 2 per layer and 3.
    None when x is not a C-contiguous, writable array of the params' dtype with n_in columns."""
    flags = x.flags
    if x.dtype is not sets.layout.dtype or not flags.c_contiguous or not flags.writeable or x.shape[-1] != net.sizes[0]:
        return None
    layout = sets.rows_layout(activation_codes(net, x.dtype))
    n_out = net.sizes[-1]
    if x.ndim == 1:
        out = _empty(n_out, x.dtype)
        _knet.forward_packed_row_into(packed, layout, x, out)
    else:
        out = _empty((x.shape[0], n_out), x.dtype)
        _knet.forward_packed_into(packed, layout, x, out)
    return out


def forward(net, params, x):
    """Network output for x: (batch, n_in) -> (batch, n_out); a 1-D x (one sample) -> 1-D output.
    Stacked params (an ensemble, ``init(..., members=K)``) give (K, batch, n_out): x (batch, n_in)
    is every member's, x (K, batch, n_in) gives member k its own x[k].

    Layer by layer, a_l = f_l(a_{l-1} W_l + b_l) with a_0 = x. The output has the params' dtype.
    Up to ``ROWS_WITHOUT_BLAS`` rows the products are summed in another order than BLAS sums them.
    """
    # One sample (an RL policy's step), or up to ROWS_WITHOUT_BLAS rows, goes straight to the row
    # kernel once it is compiled for the net's depth and dtype, if x already has the params'
    # dtype. The kernel checks the shapes and the call checks the types: it runs only for types
    # it was compiled for, and raises TypeError for any other (``call_compiling``). Anything amiss
    # falls through to the checks below, which say what is wrong. The checks alone take about as
    # long as the whole one-sample forward on the tiny benchmark net.
    if type(x) is _ndarray and (x.ndim == 1 or _few_rows(x)):
        try:
            last = net.__dict__.get("_last_step")  # training._LastStep's fields, in a plain tuple
            if last is not None:
                _, last_params, _, sets, packed, _, _ = last
                if params is last_params:  # the last train_step's own results
                    out = _packed_forward(net, sets, packed, x)
                    if out is not None:
                        return out
            layout, n_out, kernel = net._row_layout
            W = params[0][0]
            # Screened here, not left to the call's TypeError (Numba takes ~0.3 ms to build its
            # message): x of another dtype or layout, params in lists or read-only; and the
            # activations' forms made ready for x's dtype (``_codes.activation_codes``).
            flags = x.flags
            dtype = x.dtype
            # And the kernel compiled through ``call_compiling`` already (else this call would
            # compile it with its compilation left on: every later call of other types, stacked
            # params for one, would try to compile again, ~0.6 ms each).
            if (W.dtype is dtype and flags.c_contiguous and flags.writeable and type(params) is tuple
                    and W.flags.writeable and W.ndim == 2 and dtype in net._forms_ready and not kernel._can_compile):
                out = _empty(n_out, dtype) if x.ndim == 1 else _empty((x.shape[0], n_out), dtype)
                if kernel(params, layout, x, out):
                    return out
        except Exception:  # AttributeError (a first call, or no Net), TypeError (types), anything odd
            pass
    if is_stacked(params):
        return stacked.forward(net, params, x)
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    rows = x2d.shape[0]
    if rows <= ROWS_WITHOUT_BLAS:
        xin = x2d[0] if single else x2d
        out = _row_output(net, xin)
        layout, _, kernel = row_layout(net, dtype)
        _forward_rows(kernel, params, layout, xin, out)
        return out
    acts = layer_buffers(net, rows, dtype)
    _knet.forward_into(params, activation_codes(net, dtype), x2d, acts)
    return acts[-1][0] if single else acts[-1]


def grad(net, params, x, y_true, loss="mse", sample_weight=None):
    """(mean loss as a Python float, dL/dparams shaped like params) for one batch. A fused net's
    large batch is split over two threads as ``train_step``'s is (``fastnn/_threads.py``).

    ``sample_weight``: one weight >= 0 per sample, not all zero; the loss is then the weighted mean
    sum_i w_i l_i / sum_i w_i of the samples' losses l_i (each averaged over the outputs for the
    elementwise losses), computed in the kernels. Integer weights equal repeating the rows.

    On a fused net the gradients are views of one buffer (``_buffers.FusedStepSets``, role
    "grad"), fresh to the caller: a buffer is reused only once nothing refers to it any more.

    Stacked params (an ensemble) give (losses (K,), stacked grads) from one compiled call; x,
    y_true and sample_weight are every member's, or each member's own behind a leading K axis
    (``fastnn.ensemble.member_batches``)."""
    if sample_weight is None:
        result = _fused_grad_unchecked(net, params, x, y_true, loss)
        if result is not None:
            return result
    if is_stacked(params):
        return stacked.grad(net, params, x, y_true, loss, sample_weight)
    on_fused = fused(net)
    params, dtype, x2d, loss_in = prepare_batch(net, params, x, y_true, loss, on_fused, sample_weight)
    batch = x2d.shape[0]
    if on_fused and _threads.splits(net, batch):
        value, grads = _threads.whole_grad(net, params, x2d, loss_in)
        return float(value), grads
    if on_fused:
        sets = fused_step_sets(net, dtype, 0, "grad")
        flat, (grads, _) = sets.take()
        return checked_fused_grad(net, params, x2d, loss_in, flat, sets.layout.packing), grads
    if batch == 0:
        return 0.0, zeros_like_params(params)
    grads = zeros_like_params(params)
    buffers, _ = workspace(net, params, batch, dtype)
    value = _knet.grad_into(params, activation_codes(net, dtype), x2d, loss_in, buffers, grads)
    return float(value), grads


def checked_fused_grad(net, params, x2d, loss_in, flat, packing):
    """The mean loss of a checked batch (``prepare_batch``) on a fused net, its gradient written
    into the one params-shaped set ``flat`` holds as ``packing`` lays it out (``_buffers.PackedSets``),
    through ``kernels.fused.fused_grad_checked_into``, compiled for these types here
    (``call_compiling``) so that the fast lane can call it."""
    fits, value = call_compiling(_fused_grad, params, row_layout(net, x2d.dtype)[0], x2d, loss_in, packing, flat)
    _fused_grad_compiled.add(True)
    if not fits:  # the checks before passed: the kernel's own must too
        raise RuntimeError("fastnn: the fused gradient rejected checked arguments")
    return float(value)


_fused_grad = _kfused.fused_grad_checked_into
_fused_grad_compiled = set()  # non-empty once call_compiling has compiled _fused_grad


def _fused_grad_unchecked(net, params, x, y_true, loss):
    """grad's result through ``kernels.fused.fused_grad_checked_into`` without the Python
    checks, or None: then ``grad`` takes the checked way, which says what is wrong.

    As train_step's fast lane (``training._fused_step_unchecked``): the types are screened here
    (x and targets arrays of params' dtype, 2-D x, int64 labels or 2-D targets), the call checks
    the exact argument types (compiled only through ``call_compiling``) and the kernel every
    shape and label. Read-only params are screened out here (by the first W, as ``forward``
    does): the call's TypeError would take Numba ~0.3 ms to word. Tiny net, Zen 4: 6.2 -> ~2 us of
    Python a call."""
    if type(x) is not _ndarray or type(y_true) is not _ndarray or x.ndim != 2 or not _fused_grad_compiled:
        return None
    if x.shape[0] >= _threads.SPLIT_MIN_ROWS and _threads.splits(net, x.shape[0]):
        return None
    try:
        dtype = x.dtype
        W = params[0][0]
        if (type(params) is not tuple or W.dtype is not dtype or W.ndim != 2 or not W.flags.writeable
                or dtype not in net._forms_ready or not fused(net)):
            return None
        screened = plain_loss_inputs(loss, y_true, dtype)
        if screened is None:
            return None
        sets = fused_step_sets(net, dtype, 0, "grad")
        flat, (grads, _) = sets.take()
        fits, value = _fused_grad(params, net._row_layout[0], x, screened[1], sets.layout.packing, flat)
    except Exception:  # AttributeError (no Net, a first call), TypeError (types), anything odd
        return None
    return (float(value), grads) if fits else None


def backward(net, params, x, dy):
    """Vector-Jacobian product: given dy = dL/d(output), return (dL/dparams, dL/dx).

    dx has the shape of x (1-D for one sample). Use it to train with a loss fastnn does not provide.
    Stacked params (an ensemble): stacked grads and dx (K, batch, n_in), dy (K, batch, n_out).
    """
    if is_stacked(params):
        return stacked.backward(net, params, x, dy)
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    batch = x2d.shape[0]
    dy2d = _checks.check_output_grad(net, dy, batch, single, dtype)
    buffers, _ = workspace(net, params, batch, dtype)
    grads = zeros_like_params(params)  # returned: fresh
    dx = np.zeros_like(x2d)
    if batch:
        _knet.vjp_into(params, activation_codes(net, dtype), x2d, dy2d, buffers, grads, dx)
    return grads, (dx[0] if single else dx)


def predict(net, params, x, batch_size=None):
    """``forward`` in chunks of ``batch_size`` rows: the same outputs, with memory for the layer
    activations bounded by the chunk (None: all rows at once). Stacked params (an ensemble) give
    (K, rows, n_out), as ``forward`` does."""
    if is_stacked(params):
        if batch_size is None:
            return forward(net, params, x)
        return stacked.predict(net, params, x, _checks.check_positive_int(batch_size, "batch_size"))
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    if batch_size is not None:
        batch_size = _checks.check_positive_int(batch_size, "batch_size")
    out = outputs_into(net, params, x2d, batch_size)
    return out[0] if single else out


def outputs_into(net, params, x2d, batch_size=None):
    """Network outputs for checked params and x2d, computed ``batch_size`` rows at a time."""
    n = x2d.shape[0]
    chunk = n if batch_size is None else min(batch_size, n)
    out = np.empty((n, net.sizes[-1]), dtype=x2d.dtype)
    if n == 0:
        return out
    hidden = layer_buffers(net, chunk, x2d.dtype)[:-1]
    codes = activation_codes(net, x2d.dtype)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        # Row slices of C-contiguous arrays stay C-contiguous: the kernel writes straight into out.
        _knet.forward_into(params, codes, x2d[lo:hi], tuple(h[:hi - lo] for h in hidden) + (out[lo:hi],))
    return out


# Stacked params (an ensemble) go to fastnn.stacked, which builds on this module's checks and
# kernels choice: imported last, once everything it takes from here is defined.
from . import stacked  # noqa: E402
