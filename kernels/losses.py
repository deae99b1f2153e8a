"""Loss value and gradient with respect to the raw network output, selected by an integer code.

``loss_and_grad`` returns the mean loss and writes dL/d(out) into ``dout``. Means follow PyTorch's
defaults: the elementwise losses (mse, mae, huber, sigmoid cross-entropy) average over batch and
outputs; softmax cross-entropy averages over the batch only. The batch may arrive in row blocks:
``rows`` is the whole batch's row count, and the block's share of the mean is returned. Targets
arrive as a float matrix ``target`` shaped like ``out`` or, for ``SOFTMAX_CE_LABELS``, as int64
class labels ``labels`` already checked to lie in [0, k); the unused one is an empty placeholder.

The loss value is accumulated in float64 (it is returned as a Python float, and a long float32 sum
would lose digits); the gradient is computed in the dtype of ``out``.
"""

import math

import numpy as np
from numba.core import types
from numba.extending import intrinsic, overload

from . import vmath
from ._config import OPTIONS, jit, jit_inline
from .forms import FormTable, fill_nan

MSE, MAE, HUBER, SIGMOID_CE, SOFTMAX_CE, SOFTMAX_CE_LABELS = _CODES = range(6)

HUBER_DELTA = 1.0


# The elementwise losses' terms, one per code: (l, g) for one output z and its target t, with l
# the loss in float64 and g = dL/dz times N in z's dtype (e = z - t; see loss_and_grad).
def _mse(z, t):
    e = z - t
    return float(e) * float(e), type(z)(2.0) * e


def _mae(z, t):
    e = z - t
    one, zero = type(z)(1.0), type(z)(0.0)
    return abs(float(e)), one if e > zero else (-one if e < zero else e)  # sign, NaN stays NaN


def _huber(z, t):
    e = z - t
    delta = type(z)(HUBER_DELTA)
    ae = abs(e)
    if ae <= delta:
        return 0.5 * float(e) * float(e), e
    return float(delta) * (float(ae) - 0.5 * float(delta)), (delta if e > type(z)(0.0) else -delta) if e == e else e


def _sigmoid_ce(z, t):
    zd = float(z)
    one = type(z)(1.0)
    if z < type(z)(0.0):
        ez = math.exp(z)
        s = ez / (one + ez)
    else:
        s = one / (one + math.exp(-z))
    return max(zd, 0.0) - zd * float(t) + math.log1p(math.exp(-abs(zd))), s - t


_TERMS = {MSE: jit_inline(_mse), MAE: jit_inline(_mae), HUBER: jit_inline(_huber), SIGMOID_CE: jit_inline(_sigmoid_ce)}


@jit_inline
def _elementwise(term, out, target, dout, rows):
    """The elementwise losses: the terms summed over the block, divided by N = rows * outputs."""
    n, k = out.shape
    scale = out.dtype.type(1.0 / (rows * k))
    total = 0.0
    for i in range(n):
        for j in range(k):
            value, slope = term(out[i, j], target[i, j])
            total += value
            dout[i, j] = slope * scale
    return total / (rows * k)


def _loss_code(code, out, target, labels, dout, rows):
    """loss_and_grad's work for a literal code (jitted only)."""
    raise NotImplementedError("jitted only")


def _transposed_code(code, z_t, labels, d_t, rows):
    """softmax_ce_labels_t's work for the literal code SOFTMAX_CE_LABELS (jitted only)."""
    raise NotImplementedError("jitted only")


@overload(_loss_code, jit_options=OPTIONS)
def _loss_code_typed(code, out, target, labels, dout, rows):
    if not isinstance(code, types.IntegerLiteral):
        return None
    if code.literal_value in (SOFTMAX_CE, SOFTMAX_CE_LABELS):
        use_labels = code.literal_value == SOFTMAX_CE_LABELS
        return lambda code, out, target, labels, dout, rows: _softmax_ce(use_labels, out, target, labels, dout, rows)
    term = _TERMS[code.literal_value]
    return lambda code, out, target, labels, dout, rows: _elementwise(term, out, target, dout, rows)


@overload(_transposed_code, jit_options=OPTIONS)
def _transposed_code_typed(code, z_t, labels, d_t, rows):
    if isinstance(code, types.IntegerLiteral) and code.literal_value == SOFTMAX_CE_LABELS:
        return lambda code, z_t, labels, d_t, rows: _softmax_ce_labels_t(z_t, labels, d_t, rows)
    return None


# The forms (``forms.FormTable``): ROWS for every code, TRANSPOSED for SOFTMAX_CE_LABELS only.
# With every loss compiled into the fused step (loss_and_grad's whole ladder, and the transposed
# softmax whatever the loss), first use of a tiny tanh net with mse took 19.7-21.4 s (Zen 4).

@jit
def _rows_form(code, out, target, labels, dout, rows):
    """loss_and_grad for one literal code (compiled per code: ``ensure_forms``)."""
    if out.shape[0] == 0:
        return 0.0
    return _loss_code(code, out, target, labels, dout, rows)


@jit
def _transposed_form(code, z_t, labels, d_t, rows):
    """softmax_ce_labels_t for the literal code SOFTMAX_CE_LABELS (``ensure_forms``)."""
    return _transposed_code(code, z_t, labels, d_t, rows)


ROWS, TRANSPOSED = 0, 1


def _argtypes(direction, dtype):
    matrix, labels = types.Array(dtype, 2, "C"), types.Array(types.int64, 1, "C")
    if direction == ROWS:
        return matrix, matrix, labels, matrix, types.int64
    return matrix, labels, matrix, types.int64


FORMS = FormTable("loss", (_rows_form, _transposed_form), len(_CODES), _argtypes, types.float64)


def ensure_forms(codes, dtype, fused=False):
    """Make the forms of these loss codes callable from the kernels in dtype (a NumPy dtype:
    float32 or float64), compiling or loading each that is not yet: for the fused kernels
    (``kernels/fused.py``), which take softmax with labels in its transposed form and the others
    in their row form, or else for the BLAS ones, which take every loss in its row form (the row
    form of softmax with labels compiles in ~1 s, Zen 4). Every kernel that takes a loss code
    needs it ensured first (``fastnn._codes.loss_inputs``): a kernel that meets a form not
    ensured returns NaN and writes NaN into the gradient."""
    codes = set(int(c) for c in codes)
    if fused and SOFTMAX_CE_LABELS in codes:
        FORMS.ensure((TRANSPOSED,), (SOFTMAX_CE_LABELS,), dtype)
        codes.discard(SOFTMAX_CE_LABELS)
    FORMS.ensure((ROWS,), codes, dtype)


@intrinsic
def _rows_through_table(typingctx, code, out, target, labels, dout, rows):
    """(True, the form's value) having run the rows form of ``code``; (False, NaN) if it is not
    ensured (or ``code`` is not one)."""
    return FORMS.call(ROWS, code, (out, target, labels, dout, rows))


@intrinsic
def _transposed_through_table(typingctx, code, z_t, labels, d_t, rows):
    """(True, the form's value) having run the transposed form of ``code``; (False, NaN) if not."""
    return FORMS.call(TRANSPOSED, code, (z_t, labels, d_t, rows))


@jit
def loss_and_grad(code, out, target, labels, dout, rows):
    """Loss of ``out`` against the targets summed and divided by N; writes dL/d(out) into ``dout``
    (C-contiguous, like out), through the form of ``code`` (``ensure_forms``; NaN, and NaN in
    dout, if it is not ensured).

    e = out - target, N = rows * outputs (elementwise) or rows (softmax), ``rows`` the row count of
    the batch that ``out`` is a block of (``out.shape[0]`` for a whole batch):
    mse: e^2, grad 2 e / N                       mae: |e|, grad sign(e) / N
    huber: e^2 / 2 if |e| <= delta else delta (|e| - delta / 2), grad clip(e, -delta, delta) / N
    sigmoid_ce: max(z, 0) - z t + log1p(e^-|z|), grad (sigma(z) - t) / N
    softmax_ce: sum_j t_j (lse(z) - z_j), grad (softmax(z) sum_j t_j - t) / N
    softmax_ce_labels: lse(z) - z_y, grad (softmax(z) - onehot(y)) / N
    """
    ready, value = _rows_through_table(code, out, target, labels, dout, rows)
    if not ready:
        fill_nan(dout)
    return value


@jit
def softmax_ce_labels_t(z_t, labels, d_t, rows):
    """``loss_and_grad``'s softmax_ce_labels on a transposed block: z_t and d_t are (k, rp), the
    logits and dL/dz of row r in column r, rp >= the block's labels.size rows (``rows`` as in
    loss_and_grad: the whole batch's row count). Columns past the labels get a zero gradient.
    Through the form (``ensure_forms`` with SOFTMAX_CE_LABELS; NaN, and NaN in d_t, if not)."""
    ready, value = _transposed_through_table(SOFTMAX_CE_LABELS, z_t, labels, d_t, rows)
    if not ready:
        fill_nan(d_t)
    return value


@jit_inline
def _softmax_ce(use_labels, out, target, labels, dout, rows):
    """Softmax cross-entropy per row with the max-shift, so no exp overflows. ``dout`` must be
    C-contiguous (it is taken flat).

    Three passes: per row, the max m and z - m into dout; the exponentials over all of dout at
    once; per row, the sum, the log-sum-exp and the gradient. The float32 exponentials vectorise
    (``vmath.exp``, under 1.5 ulp). The exponentials run over the whole block because rows of a
    few logits, done one by one, leave most of each row to the loop's scalar remainder (192 x 10
    float32 logits: 3.4 us this way, 5.6 us row by row)."""
    n, k = out.shape
    scale = out.dtype.type(1.0 / rows)
    total = 0.0
    maxima = np.empty(n, dtype=out.dtype)
    for i in range(n):
        m = out[i, 0]
        for j in range(1, k):
            if out[i, j] > m:
                m = out[i, j]
        maxima[i] = m
        for j in range(k):
            dout[i, j] = out[i, j] - m
    flat = dout.reshape(n * k)
    for t in range(n * k):
        flat[t] = vmath.exp(flat[t])  # vectorisable in float32 (see vmath)
    for i in range(n):
        s = out.dtype.type(0.0)
        for j in range(k):
            s += dout[i, j]
        lse = float(maxima[i]) + math.log(float(s))
        inv = out.dtype.type(1.0) / s
        if use_labels:
            y = labels[i]
            total += lse - float(out[i, y])
            for j in range(k):
                dout[i, j] = dout[i, j] * inv * scale
            dout[i, y] -= scale
        else:
            tsum = out.dtype.type(0.0)
            for j in range(k):
                tsum += target[i, j]
                total += float(target[i, j]) * (lse - float(out[i, j]))
            for j in range(k):
                dout[i, j] = (dout[i, j] * inv * tsum - target[i, j]) * scale
    return total / rows


@jit_inline
def _softmax_ce_labels_t(z_t, labels, d_t, rows):
    """``softmax_ce_labels_t``'s work.

    The same formulas as ``_softmax_ce``, term by term (LLVM may reassociate that one's sums over a
    row under "reassoc", so the two agree to rounding). With the rows along the lanes every pass
    is a vectorisable loop over r, where rows of a few logits leave ``_softmax_ce`` scalar: float32,
    one thread, Zen 4, 32 rows of 10 logits 1194 -> 567 ns, 64 rows 2242 -> 974, counting the two
    transposed copies the fused kernel made around ``_softmax_ce``."""
    k, rp = z_t.shape
    n = labels.size
    scale = z_t.dtype.type(1.0 / rows)
    work = np.empty((2, rp), dtype=z_t.dtype)
    maxima, sums = work[0], work[1]
    for r in range(rp):
        maxima[r] = z_t[0, r]
    for j in range(1, k):
        for r in range(rp):
            z = z_t[j, r]
            if z > maxima[r]:
                maxima[r] = z
    sums[:] = 0
    for j in range(k):
        for r in range(rp):
            e = vmath.exp(z_t[j, r] - maxima[r])
            d_t[j, r] = e
            sums[r] += e
    total = 0.0
    for r in range(n):
        total += float(maxima[r]) + math.log(float(sums[r])) - float(z_t[labels[r], r])
        sums[r] = z_t.dtype.type(1.0) / sums[r]
    for j in range(k):
        for r in range(n):
            d_t[j, r] = d_t[j, r] * sums[r] * scale
        for r in range(n, rp):
            d_t[j, r] = 0
    for r in range(n):
        d_t[labels[r], r] -= scale
    return total / rows
