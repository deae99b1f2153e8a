"""forward, backward and grad on the Numba path.

Each public function validates and normalises its inputs (``_checks``), allocates fresh buffers and
outputs, and makes one compiled call for the whole network. Nothing the caller passed is written:
the kernels write only into arrays allocated here.

An empty batch is valid: forward returns an empty (0, n_out) array; grad returns loss 0.0 and zero
gradients (the sum over no samples), so a training loop never sees NaN from it.
"""

import threading

import numpy as np

from kernels import activations as _kact
from kernels import losses as _kloss
from kernels import network as _knet
from kernels._config import call_compiling

from . import _checks, _recycle
from .net import ACTIVATIONS

ACTIVATION_CODES = {
    "identity": _kact.IDENTITY, "relu": _kact.RELU, "leaky_relu": _kact.LEAKY_RELU, "elu": _kact.ELU,
    "sigmoid": _kact.SIGMOID, "tanh": _kact.TANH, "softplus": _kact.SOFTPLUS, "gelu": _kact.GELU,
    "silu": _kact.SILU,
}
assert set(ACTIVATION_CODES) == set(ACTIVATIONS)

ELEMENTWISE_LOSS_CODES = {
    "mse": _kloss.MSE, "mae": _kloss.MAE, "huber": _kloss.HUBER,
    "sigmoid_cross_entropy": _kloss.SIGMOID_CE, "softmax_cross_entropy": _kloss.SOFTMAX_CE,
}

def _kept_on(net, name, make):
    """``make(net)``, computed once per Net and kept in its ``__dict__`` under ``name``.

    Every public call looks these up: an attribute read takes ~20 ns, a dict keyed on the Net ~80
    ns (and such a dict would keep every Net alive). ``Net.__getstate__`` leaves them out of pickles.
    """
    value = net.__dict__.get(name)
    if value is None:
        value = make(net)
        object.__setattr__(net, name, value)
    return value


def activation_codes(net):
    """int64 array of the net's activation codes (kept on the Net; never handed out for writing)."""
    return _kept_on(net, "_codes", _make_codes)


def _make_codes(net):
    return np.array([ACTIVATION_CODES[a] for a in net.activations], dtype=np.int64)


def layer_buffers(net, batch, dtype):
    """One fresh (batch, n_out) array per layer."""
    return tuple(np.empty((batch, n), dtype=dtype) for n in net.sizes[1:])


def block_rows(net, batch, dtype):
    """Rows of the layer buffers for training on batches of ``batch`` rows: the kernels take a batch
    through the network that many rows at a time (``kernels.network.BLOCK_ROWS``)."""
    large = net._largest_weight * dtype.itemsize >= _knet.LARGE_WEIGHT_BYTES
    return min(batch, _knet.BLOCK_ROWS_LARGE if large else _knet.BLOCK_ROWS)


def block_buffers(net, batch, dtype):
    """(zs, acts, deltas) for training on batches of ``batch`` rows (see ``block_rows``)."""
    return tuple(layer_buffers(net, block_rows(net, batch, dtype), dtype) for _ in range(3))


def training_buffers(net, params, batch, dtype):
    """(zs, acts, deltas, grads): what ``kernels.network.grad_into`` writes, freshly allocated."""
    return block_buffers(net, batch, dtype) + (zeros_like_params(params),)


_workspaces = threading.local()
_WORKSPACE_SLOTS = 8


def workspace(net, params, batch, dtype):
    """``training_buffers`` reused from call to call, for buffers that never leave fastnn.

    Allocating the ~3 (batch, width) arrays per layer cost ~5 us of a ~55 us train_step on the tiny
    benchmark net. The cache is per thread (the kernels release the GIL, so threads may train at
    once) and keyed on (net, rows, dtype), rows = ``block_rows``, so every large batch shares one;
    it keeps at most a few workspaces alive. Callers must not return any of these arrays to the
    user. grads starts zeroed and every kernel that reads it writes it first.
    """
    cache = getattr(_workspaces, "cache", None)
    if cache is None:
        cache = _workspaces.cache = {}
    rows = block_rows(net, batch, dtype)
    key = (net, rows, dtype)
    buffers = cache.get(key)
    if buffers is None:
        if len(cache) >= _WORKSPACE_SLOTS:
            cache.clear()
        buffers = cache[key] = training_buffers(net, params, rows, dtype)
    return buffers


def zeros_like_params(params):
    """Zeroed arrays shaped like params (np.zeros(shape, dtype): ~0.3 us an array, np.zeros_like ~1.4)."""
    return tuple((np.zeros(W.shape, W.dtype), np.zeros(b.shape, b.dtype)) for W, b in params)


def copy_params(params):
    """C-contiguous copies of params; weight matrices of a MB or more in recycled memory, as in
    ``empty_like_params``. (``a.copy()`` takes ~0.3 us, np.empty plus np.copyto ~0.7.)"""
    big = _recycle.MIN_BYTES
    return tuple((W.copy() if W.nbytes < big else _copied(_recycle.empty(W.shape, W.dtype), W), b.copy())
                 for W, b in params)


def _copied(out, a):
    np.copyto(out, a)
    return out


def empty_like_params(params):
    """Uninitialised arrays shaped like params. Weight matrices of a MB or more reuse the memory of
    dead ones (``_recycle``), which spares the page faults of fresh memory on large nets, and start
    on a 64-byte boundary, which the optimizer's streaming stores need (``kernels.stream``)."""
    big = _recycle.MIN_BYTES
    out = []
    for W, b in params:
        dt = W.dtype  # np.empty(shape, dtype) takes half the time of np.empty_like
        out.append((np.empty(W.shape, dt) if W.nbytes < big else _recycle.empty(W.shape, dt), np.empty(b.shape, dt)))
    return tuple(out)


def loss_inputs(loss, target, labels, dtype):
    """(kernel loss code, target matrix, labels vector), with empty placeholders for the unused one."""
    if labels is not None:
        return _kloss.SOFTMAX_CE_LABELS, target_placeholder(dtype), labels
    return ELEMENTWISE_LOSS_CODES[loss], target, _NO_LABELS


_NO_LABELS = np.empty(0, dtype=np.int64)


def target_placeholder(dtype):
    return np.empty((0, 0), dtype=dtype)


def prepare_batch(net, params, x, y_true, loss):
    """Validate a training batch. Returns (params, dtype, x2d, loss code, target, labels)."""
    params, dtype = _checks.check_params(net, params)
    _checks.check_loss(loss)
    x2d, single = _checks.check_input(net, x, dtype)
    target, labels = _checks.check_targets(loss, y_true, x2d.shape[0], net.sizes[-1], single, dtype)
    return (params, dtype, x2d) + loss_inputs(loss, target, labels, dtype)


# Up to this many rows the forward pass runs row by row (``kernels.network._layer_row``); above,
# one BLAS call per layer. Measured crossovers, one thread (row by row equals BLAS at): tiny
# 16-64-64-1 tanh ~8 rows float32, ~6 float64; small 64-128-10 relu ~5 rows float32, ~3 float64.
# At 1 row the row kernel takes 1.3-2.9 us, BLAS 5.3-7.6.
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
    layout, out = row_layout(net)[0], _row_output(net, x)
    for kernel in (_knet.forward_rows_checked_into, _knet.forward_rows_checked_nogil_into):
        _forward_rows(kernel, params, layout, x, out)


def row_layout(net):
    """(layout, n_out, kernel) for the row-by-row forward: layout is the int64 array
    [n_in, ..., n_out, code_1, ..., code_L] that ``forward_rows_checked_into`` takes; kernel is it,
    or its GIL-releasing twin for nets of ``ROWS_GIL_MAX_WEIGHTS`` weights or more. Kept on the Net
    (``_kept_on``); ``forward`` reads ``net._row_layout`` directly."""
    return _kept_on(net, "_row_layout", _make_row_layout)


def _make_row_layout(net):
    layout = np.array(net.sizes + tuple(activation_codes(net)), dtype=np.int64)
    weights = sum(m * n for m, n in zip(net.sizes[:-1], net.sizes[1:]))
    small = weights < _knet.ROWS_GIL_MAX_WEIGHTS
    return layout, net.sizes[-1], (_knet.forward_rows_checked_into if small else _knet.forward_rows_checked_nogil_into)


def _few_rows(x):
    """True for a 2-D x of at most ROWS_WITHOUT_BLAS rows."""
    return x.ndim == 2 and x.shape[0] <= ROWS_WITHOUT_BLAS


def forward(net, params, x):
    """Network output for x: (batch, n_in) -> (batch, n_out); a 1-D x (one sample) -> 1-D output.

    Layer by layer, a_l = f_l(a_{l-1} W_l + b_l) with a_0 = x. The output has the params' dtype.
    Up to ``ROWS_WITHOUT_BLAS`` rows the products are summed in another order than BLAS sums them.
    """
    # One sample (an RL policy's step), or up to ROWS_WITHOUT_BLAS rows, goes straight to the row
    # kernel once it is compiled for the net's depth and dtype, if x already has the params'
    # dtype. The kernel checks the shapes and the call checks the types: it runs only for types
    # it was compiled for, and raises TypeError for any other (``call_compiling``). Anything amiss
    # falls through to the checks below, which say what is wrong. Tiny net, float32, one thread,
    # one sample: ~2.0 us this way, 4.5-4.8 us through the checks (which alone take ~2 us).
    if type(x) is _ndarray and (x.ndim == 1 or _few_rows(x)):
        try:
            layout, n_out, kernel = net._row_layout
            W = params[0][0]
            # Screened here, not left to the call's TypeError (~0.3 ms to build its message): x of
            # another dtype or layout, params in lists or read-only (loaded from a file).
            flags = x.flags
            if (W.dtype is x.dtype and flags.c_contiguous and flags.writeable and type(params) is tuple
                    and W.flags.writeable):
                out = _empty(n_out, x.dtype) if x.ndim == 1 else _empty((x.shape[0], n_out), x.dtype)
                if kernel(params, layout, x, out):
                    return out
        except Exception:  # AttributeError (a first call, or no Net), TypeError (types), anything odd
            pass
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    rows = x2d.shape[0]
    if rows <= ROWS_WITHOUT_BLAS:
        xin = x2d[0] if single else x2d
        out = _row_output(net, xin)
        layout, _, kernel = row_layout(net)
        _forward_rows(kernel, params, layout, xin, out)
        return out
    acts = layer_buffers(net, rows, dtype)
    _knet.forward_into(params, activation_codes(net), x2d, acts)
    return acts[-1][0] if single else acts[-1]


def grad(net, params, x, y_true, loss="mse"):
    """(mean loss as a Python float, dL/dparams shaped like params) for one batch."""
    params, dtype, x2d, code, target, labels = prepare_batch(net, params, x, y_true, loss)
    batch = x2d.shape[0]
    if batch == 0:
        return 0.0, zeros_like_params(params)
    zs, acts, deltas, _ = workspace(net, params, batch, dtype)
    grads = zeros_like_params(params)  # returned: fresh
    value = _knet.grad_into(params, activation_codes(net), code, x2d, target, labels, zs, acts, deltas, grads)
    return float(value), grads


def backward(net, params, x, dy):
    """Vector-Jacobian product: given dy = dL/d(output), return (dL/dparams, dL/dx).

    dx has the shape of x (1-D for one sample). Use it to train with a loss fastnn does not provide.
    """
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    batch = x2d.shape[0]
    dy2d = _checks.check_output_grad(net, dy, batch, single, dtype)
    zs, acts, deltas, _ = workspace(net, params, batch, dtype)
    grads = zeros_like_params(params)  # returned: fresh
    dx = np.zeros_like(x2d)
    if batch:
        _knet.vjp_into(params, activation_codes(net), x2d, dy2d, zs, acts, deltas, grads, dx)
    return grads, (dx[0] if single else dx)


def predict(net, params, x, batch_size=None):
    """``forward`` in chunks of ``batch_size`` rows: the same outputs, with memory for the layer
    activations bounded by the chunk (None: all rows at once)."""
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
    codes = activation_codes(net)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        # Row slices of C-contiguous arrays stay C-contiguous: the kernel writes straight into out.
        _knet.forward_into(params, codes, x2d[lo:hi], tuple(h[:hi - lo] for h in hidden) + (out[lo:hi],))
    return out


def loss_value(loss, out, target, labels):
    """Mean loss of checked outputs against checked targets (one of target, labels is None)."""
    code, target, labels = loss_inputs(loss, target, labels, out.dtype)
    dout = np.empty(out.shape, out.dtype)  # C-contiguous, as the kernel needs
    return float(_kloss.loss_and_grad(code, out, target, labels, dout, out.shape[0]))
