"""Loss value and gradient with respect to the raw network output, selected by an integer code.

``loss_and_grad`` returns the mean loss and writes dL/d(out) into ``dout``. Means follow PyTorch's
defaults: the elementwise losses (mse, mae, huber, sigmoid cross-entropy) average over batch and
outputs; softmax cross-entropy averages over the batch only. With sample weights w_i (scikit-learn's
definition) the mean over rows is a weighted one, sum_i w_i l_i / sum_i w_i, l_i row i's loss
(averaged over its outputs for the elementwise losses). The batch may arrive in row blocks:
``count`` is the whole batch's row count, or its weights' sum, as a float, and the block's share
of the mean is returned (a count of 0, all weights zero, gives 0 and a zero gradient). Targets
arrive as a float matrix ``target`` shaped like ``out`` or, for ``SOFTMAX_CE_LABELS``, as int64
class labels ``labels`` already checked to lie in [0, k); the unused one is an empty placeholder,
as are the block's ``weights`` (of out's dtype, one per row) when the rows are not weighted.

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

MSE, MAE, HUBER, SIGMOID_CE, SOFTMAX_CE, SOFTMAX_CE_LABELS, GAUSSIAN_NLL = _CODES = range(7)

HUBER_DELTA = 1.0
# PyTorch's GaussianNLLLoss eps: the variance is clamped to at least this
VARIANCE_FLOOR = 1e-6


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
def _elementwise(term, out, target, weights, dout, count):
    """The elementwise losses: the terms summed over the block (each row's times its weight, if
    weighted), divided by N = count * outputs."""
    n, k = out.shape
    per = count * k
    if per == 0:  # every weight zero
        dout[:] = 0
        return 0.0
    scale = out.dtype.type(1.0 / per)
    total = 0.0
    # Two loops: the unweighted one reads no weight and scales no row (the weighted loop with
    # every w = 1 gives the same bits, with that work per row).
    if weights.shape[0] == 0:
        for i in range(n):
            for j in range(k):
                value, slope = term(out[i, j], target[i, j])
                total += value
                dout[i, j] = slope * scale
    else:
        for i in range(n):
            w = float(weights[i])
            row_scale = out.dtype.type(w / per)
            for j in range(k):
                value, slope = term(out[i, j], target[i, j])
                total += w * value
                dout[i, j] = slope * row_scale
    return total / per


@jit_inline
def _gaussian_nll(out, target, weights, dout, count):
    """Gaussian negative log-likelihood of a mean and log-variance head, as PyTorch's
    GaussianNLLLoss (full=False) computes it with var = exp(s): out = [mu (d), s (d)], target (d),
    each term (log v + (mu - t)^2 / v) / 2 with v = max(exp(s), VARIANCE_FLOOR), averaged over
    N = count * d (weighted rows as elsewhere). The clamp is left out of the gradient, as
    PyTorch clamps under no_grad: dL/dmu = (mu - t) / v, dL/ds = exp(s) (1 / v - (mu - t)^2 / v^2) / 2,
    written with exp(s - log v) so that no exp overflows."""
    n, k = out.shape
    d = k // 2
    per = count * d
    if per == 0:  # every weight zero
        dout[:] = 0
        return 0.0
    floor = math.log(VARIANCE_FLOOR)
    total = 0.0
    weighted = weights.shape[0] > 0
    for i in range(n):
        w = float(weights[i]) if weighted else 1.0
        row_scale = w / per
        for j in range(d):
            mu, s, t = float(out[i, j]), float(out[i, d + j]), float(target[i, j])
            log_v = max(s, floor)
            e = mu - t
            e2_over_v = e * e * math.exp(-log_v)
            total += w * 0.5 * (log_v + e2_over_v)
            dout[i, j] = out.dtype.type(e * math.exp(-log_v) * row_scale)
            dout[i, d + j] = out.dtype.type(0.5 * math.exp(s - log_v) * (1.0 - e2_over_v) * row_scale)
    return total / per


def _loss_code(code, out, target, labels, weights, dout, count):
    """loss_and_grad's work for a literal code (jitted only)."""
    raise NotImplementedError("jitted only")


def _transposed_code(code, z_t, labels, weights, d_t, count):
    """softmax_ce_labels_t's work for the literal code SOFTMAX_CE_LABELS (jitted only)."""
    raise NotImplementedError("jitted only")


@overload(_loss_code, jit_options=OPTIONS)
def _loss_code_typed(code, out, target, labels, weights, dout, count):
    if not isinstance(code, types.IntegerLiteral):
        return None
    if code.literal_value in (SOFTMAX_CE, SOFTMAX_CE_LABELS):
        use_labels = code.literal_value == SOFTMAX_CE_LABELS
        return lambda code, out, target, labels, weights, dout, count: _softmax_ce(
            use_labels, out, target, labels, weights, dout, count)
    if code.literal_value == GAUSSIAN_NLL:
        return lambda code, out, target, labels, weights, dout, count: _gaussian_nll(out, target, weights, dout, count)
    term = _TERMS[code.literal_value]
    return lambda code, out, target, labels, weights, dout, count: _elementwise(term, out, target, weights, dout, count)


@overload(_transposed_code, jit_options=OPTIONS)
def _transposed_code_typed(code, z_t, labels, weights, d_t, count):
    if isinstance(code, types.IntegerLiteral) and code.literal_value == SOFTMAX_CE_LABELS:
        return lambda code, z_t, labels, weights, d_t, count: _softmax_ce_labels_t(z_t, labels, weights, d_t, count)
    return None


# The forms (``forms.FormTable``): ROWS for every code, TRANSPOSED for SOFTMAX_CE_LABELS only.
# With every loss compiled into the fused step (loss_and_grad's whole ladder, and the transposed
# softmax whatever the loss), first use of a tiny tanh net with mse took 19.7-21.4 s (Zen 4).

@jit
def _rows_form(code, out, target, labels, weights, dout, count):
    """loss_and_grad for one literal code (compiled per code: ``ensure_forms``)."""
    if out.shape[0] == 0:
        return 0.0
    return _loss_code(code, out, target, labels, weights, dout, count)


@jit
def _transposed_form(code, z_t, labels, weights, d_t, count):
    """softmax_ce_labels_t for the literal code SOFTMAX_CE_LABELS (``ensure_forms``)."""
    return _transposed_code(code, z_t, labels, weights, d_t, count)


ROWS, TRANSPOSED = 0, 1


@jit_inline
def batch_count(weights, n):
    """The ``count`` of a batch of n rows: n, as a float, or its weights' sum (in float64)."""
    if weights.shape[0] == 0:
        return float(n)
    total = 0.0
    for i in range(weights.shape[0]):
        total += float(weights[i])
    return total


def _argtypes(direction, dtype):
    matrix, labels, weights = types.Array(dtype, 2, "C"), types.Array(types.int64, 1, "C"), types.Array(dtype, 1, "C")
    if direction == ROWS:
        return matrix, matrix, labels, weights, matrix, types.float64
    return matrix, labels, weights, matrix, types.float64


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
def _rows_through_table(typingctx, code, out, target, labels, weights, dout, count):
    """(True, the form's value) having run the rows form of ``code``; (False, NaN) if it is not
    ensured (or ``code`` is not one)."""
    return FORMS.call(ROWS, code, (out, target, labels, weights, dout, count))


@intrinsic
def _transposed_through_table(typingctx, code, z_t, labels, weights, d_t, count):
    """(True, the form's value) having run the transposed form of ``code``; (False, NaN) if not."""
    return FORMS.call(TRANSPOSED, code, (z_t, labels, weights, d_t, count))


@jit
def loss_and_grad(code, out, target, labels, weights, dout, count):
    """Loss of ``out`` against the targets summed (row i's times weights[i] when weights is not
    empty) and divided by N; writes dL/d(out) into ``dout`` (C-contiguous, like out), through the
    form of ``code`` (``ensure_forms``; NaN, and NaN in dout, if it is not ensured).

    e = out - target, N = count * outputs (elementwise) or count (softmax), ``count`` the row count
    of the batch that ``out`` is a block of, or its weights' sum (``batch_count``); the gradients
    below are row i's, times weights[i] when weighted:
    mse: e^2, grad 2 e / N                       mae: |e|, grad sign(e) / N
    huber: e^2 / 2 if |e| <= delta else delta (|e| - delta / 2), grad clip(e, -delta, delta) / N
    sigmoid_ce: max(z, 0) - z t + log1p(e^-|z|), grad (sigma(z) - t) / N
    softmax_ce: sum_j t_j (lse(z) - z_j), grad (softmax(z) sum_j t_j - t) / N
    softmax_ce_labels: lse(z) - z_y, grad (softmax(z) - onehot(y)) / N
    gaussian_nll: out = [mu, s] (2d outputs), target d wide, N = count * d (``_gaussian_nll``)
    """
    ready, value = _rows_through_table(code, out, target, labels, weights, dout, count)
    if not ready:
        fill_nan(dout)
    return value


@jit
def softmax_ce_labels_t(z_t, labels, weights, d_t, count):
    """``loss_and_grad``'s softmax_ce_labels on a transposed block: z_t and d_t are (k, rp), the
    logits and dL/dz of row r in column r, rp >= the block's labels.size rows (weights and
    ``count`` as in loss_and_grad). Columns past the labels get a zero gradient. Through the form
    (``ensure_forms`` with SOFTMAX_CE_LABELS; NaN, and NaN in d_t, if not)."""
    ready, value = _transposed_through_table(SOFTMAX_CE_LABELS, z_t, labels, weights, d_t, count)
    if not ready:
        fill_nan(d_t)
    return value


@jit_inline
def _softmax_ce(use_labels, out, target, labels, weights, dout, count):
    """Softmax cross-entropy per row with the max-shift, so no exp overflows. ``dout`` must be
    C-contiguous (it is taken flat).

    Three passes: per row, the max m and z - m into dout; the exponentials over all of dout at
    once; per row, the sum, the log-sum-exp and the gradient. The float32 exponentials vectorise
    (``vmath.exp``, under 1.5 ulp). The exponentials run over the whole block because rows of a
    few logits, done one by one, leave most of each row to the loop's scalar remainder (192 x 10
    float32 logits: 3.4 us this way, 5.6 us row by row)."""
    n, k = out.shape
    if count == 0:  # every weight zero
        dout[:] = 0
        return 0.0
    weighted = weights.shape[0] > 0
    scale = out.dtype.type(1.0 / count)
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
        w = float(weights[i]) if weighted else 1.0
        row_scale = out.dtype.type(w / count) if weighted else scale
        if use_labels:
            y = labels[i]
            total += w * (lse - float(out[i, y]))
            for j in range(k):
                dout[i, j] = dout[i, j] * inv * row_scale
            dout[i, y] -= row_scale
        else:
            tsum = out.dtype.type(0.0)
            row = 0.0
            for j in range(k):
                tsum += target[i, j]
                term = float(target[i, j]) * (lse - float(out[i, j]))
                if weighted:
                    row += term
                else:
                    total += term
            total += w * row
            for j in range(k):
                dout[i, j] = (dout[i, j] * inv * tsum - target[i, j]) * row_scale
    return total / count


@jit_inline
def _softmax_ce_labels_t(z_t, labels, weights, d_t, count):
    """``softmax_ce_labels_t``'s work.

    The same formulas as ``_softmax_ce``, term by term (LLVM may reassociate that one's sums over a
    row under "reassoc", so the two agree to rounding). With the rows along the lanes every pass
    is a vectorisable loop over r, where rows of a few logits leave ``_softmax_ce`` scalar: float32,
    one thread, Zen 4, 32 rows of 10 logits 1194 -> 567 ns, 64 rows 2242 -> 974, counting the two
    transposed copies the fused kernel made around ``_softmax_ce``."""
    k, rp = z_t.shape
    n = labels.size
    if count == 0:  # every weight zero
        d_t[:] = 0
        return 0.0
    weighted = weights.shape[0] > 0
    scale = z_t.dtype.type(1.0 / count)
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
        row = float(maxima[r]) + math.log(float(sums[r])) - float(z_t[labels[r], r])
        sums[r] = z_t.dtype.type(1.0) / sums[r]
        if weighted:  # row r's gradient (softmax - onehot) w_r / count: the weight folded in here
            total += float(weights[r]) * row
            sums[r] *= weights[r]
        else:
            total += row
    for j in range(k):
        for r in range(n):
            d_t[j, r] = d_t[j, r] * sums[r] * scale
        for r in range(n, rp):
            d_t[j, r] = 0
    for r in range(n):
        d_t[labels[r], r] -= weights[r] * scale if weighted else scale
    return total / count
