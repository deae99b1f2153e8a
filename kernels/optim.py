"""Optimizer updates with PyTorch's rules, one generic kernel selected by an integer code.

``update_into`` reads params, grads and the optimizer's moment slots and writes the updated values
into separate ``out`` arrays (which may alias the inputs: every element is read before it is
written). ``slots`` holds only the moments the optimizer uses (see ``update_into``).

Hyperparameters arrive in ``hp``, an array in the params' dtype whose layout is given by the index
constants below. Step-dependent scalars (scheduled lr, bias corrections, "first step" flags) are
computed once per step by the caller in float64, as PyTorch does with Python floats, and rounded
to the params' dtype here.

Gradient clipping by global norm (torch.nn.utils.clip_grad_norm_) comes first when hp[CLIP] > 0:
g <- g * min(1, clip / (||all grads||_2 + 1e-6)), the norm taken over every array of the network.

Per element, with g the gradient and p the parameter (``wd`` coupled weight decay, g <- g + wd p):
  sgd:     b = g (first step) or mu b + (1 - dampening) g;  g = g + mu b (nesterov) or b;  p -= lr g
  rmsprop: v = alpha v + (1 - alpha) g^2;  centered: m = alpha m + (1 - alpha) g, v~ = v - m^2;
           d = sqrt(v~) + eps;  momentum: b = mu b + g / d, p -= lr b;  else p -= lr g / d
  adagrad: s += g^2;  p -= clr g / (sqrt(s) + eps),  clr = lr / (1 + (t - 1) lr_decay)
  adam:    p *= decay (adamw: 1 - lr wd, else 1);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
           p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps),  bc_i = 1 - b_i^t
"""

import math

import numpy as np
from numba.core import types
from numba.extending import overload

from ._config import EXACT_OPTIONS, jit, jit_inline
from .stream import LINE_BYTES, line_offset, store_fence, stream_into

SGD, RMSPROP, ADAGRAD, ADAM = range(4)

# hp layout. Shared: learning rate for this step and coupled weight decay.
LR, WD = 0, 1
# sgd
SGD_MOMENTUM, SGD_DAMPENING, SGD_NESTEROV, SGD_FIRST = 2, 3, 4, 5
# rmsprop
RMS_ALPHA, RMS_EPS, RMS_MOMENTUM, RMS_CENTERED = 2, 3, 4, 5
# adagrad (LR holds the decayed clr)
ADAGRAD_EPS = 2
# adam / adamw
ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_BC1, ADAM_BC2_SQRT, ADAM_DECAY = 2, 3, 4, 5, 6, 7
# Shared: clip the gradients to this global norm first (0 = no clipping).
CLIP = 8
HP_SIZE = 9

# torch.nn.utils.clip_grad_norm_ divides by (norm + 1e-6).
CLIP_EPS = 1e-6


@jit_inline
def _sgd(hp, gscale, p, g, b, p_out, b_out):
    """SGD on one flat array; ``b`` is the momentum buffer (unused without momentum)."""
    lr = hp[LR]
    wd = hp[WD]
    mu = hp[SGD_MOMENTUM]
    if mu == 0:
        for i in range(p.size):
            p_out[i] = p[i] - lr * (g[i] * gscale + wd * p[i])
    else:
        damp = hp.dtype.type(1.0) - hp[SGD_DAMPENING]
        first = hp[SGD_FIRST] != 0
        nesterov = hp[SGD_NESTEROV] != 0
        for i in range(p.size):
            gi = g[i] * gscale + wd * p[i]
            bi = gi if first else mu * b[i] + damp * gi
            b_out[i] = bi
            p_out[i] = p[i] - lr * (gi + mu * bi if nesterov else bi)


@jit_inline
def _rmsprop(centered, momentum, hp, gscale, p, g, v, m, b, p_out, v_out, m_out, b_out):
    """RMSprop on one flat array; ``centered`` and ``momentum`` are constants at every call site,
    so each of the four variants is a loop without branches (m, b unused when off)."""
    one = hp.dtype.type(1.0)
    lr = hp[LR]
    wd = hp[WD]
    alpha = hp[RMS_ALPHA]
    eps = hp[RMS_EPS]
    mu = hp[RMS_MOMENTUM]
    for i in range(p.size):
        gi = g[i] * gscale + wd * p[i]
        vi = alpha * v[i] + (one - alpha) * gi * gi
        v_out[i] = vi
        if centered:
            mi = alpha * m[i] + (one - alpha) * gi
            m_out[i] = mi
            vi = vi - mi * mi
        d = math.sqrt(vi) + eps
        if momentum:
            bi = mu * b[i] + gi / d
            b_out[i] = bi
            p_out[i] = p[i] - lr * bi
        else:
            p_out[i] = p[i] - lr * gi / d


@jit_inline
def _adagrad(hp, gscale, p, g, s, p_out, s_out):
    lr = hp[LR]
    wd = hp[WD]
    eps = hp[ADAGRAD_EPS]
    for i in range(p.size):
        gi = g[i] * gscale + wd * p[i]
        si = s[i] + gi * gi
        s_out[i] = si
        p_out[i] = p[i] - lr * gi / (math.sqrt(si) + eps)


@jit_inline
def _adam(hp, gscale, p, g, m, v, p_out, m_out, v_out):
    one = hp.dtype.type(1.0)
    wd = hp[WD]
    b1 = hp[ADAM_BETA1]
    b2 = hp[ADAM_BETA2]
    eps = hp[ADAM_EPS]
    step_size = hp[LR] / hp[ADAM_BC1]
    bc2_sqrt = hp[ADAM_BC2_SQRT]
    decay = hp[ADAM_DECAY]
    for i in range(p.size):
        gi = g[i] * gscale + wd * p[i]
        mi = b1 * m[i] + (one - b1) * gi
        vi = b2 * v[i] + (one - b2) * gi * gi
        m_out[i] = mi
        v_out[i] = vi
        p_out[i] = p[i] * decay - step_size * mi / (math.sqrt(vi) / bc2_sqrt + eps)


@jit_inline
def _update_array(code, hp, gscale, p, g, s0, s1, s2, p_out, o0, o1, o2, n_slots):
    """One flat parameter array and its slots (see update_into for which slot is which), for an
    optimizer whose state has ``n_slots`` moments.

    ``n_slots`` is the length of update_into's slots tuple, a constant in the compiled code, so
    LLVM drops the branches for the optimizers with another number of moments before its costly
    passes. fnn.step with plain SGD on the tiny net compiled in 6.1 s before, 5.0 s with this
    ladder (Adam 6.9 s, 6.2 s). Numba itself still types every branch: with SGD's loops alone
    the compile takes 2.9 s.
    Each loop has no branch inside, so LLVM vectorises it whatever ``code`` is. Measured
    alternatives: as a separate compiled function (not inlined) every call passes 12 arrays and
    plain SGD on the tiny net took 3.7 us instead of 2.5; inlined into a ladder that makes ``code``
    a constant per optimizer, the first train_step compiled for 22 s instead of 10-13 s.
    """
    if n_slots == 0:  # sgd without momentum
        _sgd(hp, gscale, p, g, s0, p_out, o0)
    elif n_slots == 1:  # sgd with momentum, rmsprop, adagrad
        if code == SGD:
            _sgd(hp, gscale, p, g, s0, p_out, o0)
        elif code == RMSPROP:
            _rmsprop(False, False, hp, gscale, p, g, s0, s1, s2, p_out, o0, o1, o2)
        else:
            _adagrad(hp, gscale, p, g, s0, p_out, o0)
    elif n_slots == 2:  # rmsprop centered or with momentum (v, m, b) = (square_avg, grad_avg, buffer); adam
        if code == RMSPROP:
            if hp[RMS_CENTERED] != 0:
                _rmsprop(True, False, hp, gscale, p, g, s0, s1, s2, p_out, o0, o1, o2)
            else:
                _rmsprop(False, True, hp, gscale, p, g, s0, s1, s2, p_out, o0, o1, o2)
        else:
            _adam(hp, gscale, p, g, s0, s1, p_out, o0, o1)
    else:  # rmsprop centered with momentum
        _rmsprop(True, True, hp, gscale, p, g, s0, s1, s2, p_out, o0, o1, o2)


# A weight matrix of at least this many bytes is written by streaming stores (``_update_matrix``);
# smaller ones, which the next step may still find in the caches, by plain stores. Chained Adam
# train_steps on a w-w-w-10 relu net, batch 64, streaming every matrix against none: 1 MiB matrices
# 3.27 ms against 2.56, 2 MiB 5.81 against 5.21, 4 MiB 12.64 against 12.78, 8 MiB 23.5 against 25.2,
# 16 MiB 54.0 against 55.7.
STREAM_MIN_BYTES = 4 << 20
# One scratch row per output, three or four rows in all, which stay in L2 between the computation
# and the streaming stores. Adam on the large benchmark net's three matrices (8.4M float32 params):
# rows of 8 KiB 15.8 ms, 16 KiB 15.3, 32 KiB 14.4, 64 KiB 13.5, 128 KiB 13.4-14.0, 256 KiB
# 13.7-14.3; plain stores 17.6-18.3.
_CHUNK_BYTES = 64 << 10


@jit_inline
def _update_matrix(code, hp, gscale, p, g, s0, s1, s2, p_out, o0, o1, o2, n_slots, scratch):
    """``_update_array`` for a flattened weight matrix; one of STREAM_MIN_BYTES or more writes its
    outputs by streaming stores.

    Writes p_out and the first ``n_slots`` of (o0, o1, o2) (o2 may be o1, see update_into). To
    stream, the update is computed a chunk at a time into the rows of ``scratch`` (4 x chunk), and
    the rows are streamed to the outputs (kernels.stream). That needs every written output at the
    same offset from a 64-byte boundary (fastnn allocates large arrays 64-byte aligned); elements
    before the first boundary, the tail after the last whole line, small matrices and matrices
    whose outputs are not aligned alike take plain stores. One call site of ``_update_array`` for
    every case: each inlined copy of the optimizers' loops adds seconds to the first compile.
    """
    size = p.itemsize
    n = p.size
    head = n  # elements before the first streamed line: all of them unless streaming
    if p_out.nbytes >= STREAM_MIN_BYTES:
        off = line_offset(p_out)
        if (off % size == 0 and (n_slots < 1 or line_offset(o0) == off)
                and (n_slots < 2 or line_offset(o1) == off) and (n_slots < 3 or line_offset(o2) == off)):
            head = ((LINE_BYTES - off) % LINE_BYTES) // size
    line = LINE_BYTES // size
    t2 = scratch[2] if o2.ctypes.data == o1.ctypes.data else scratch[3]
    lo = 0
    while lo < n:
        streamed = lo >= head and n - lo >= line
        if streamed:
            hi = lo + min(scratch.shape[1], (n - lo) // line * line)
            q, a0, a1, a2 = scratch[0, :hi - lo], scratch[1, :hi - lo], scratch[2, :hi - lo], t2[:hi - lo]
        else:
            hi = head if lo < head else n
            q, a0, a1, a2 = p_out[lo:hi], o0[lo:hi], o1[lo:hi], o2[lo:hi]
        _update_array(code, hp, gscale, p[lo:hi], g[lo:hi], s0[lo:hi], s1[lo:hi], s2[lo:hi], q, a0, a1, a2, n_slots)
        if streamed:
            stream_into(p_out, lo, q, hi - lo)
            if n_slots > 0:
                stream_into(o0, lo, a0, hi - lo)
            if n_slots > 1:
                stream_into(o1, lo, a1, hi - lo)
            if n_slots > 2:
                stream_into(o2, lo, a2, hi - lo)
        lo = hi


@jit_inline
def _streams(params_out):
    """True when some weight matrix is large enough to be written by streaming stores."""
    for l in range(len(params_out)):
        if params_out[l][0].nbytes >= STREAM_MIN_BYTES:
            return True
    return False


@jit_inline
def _flat(a):
    return a.reshape(a.size)


@jit
def _clip_scale(hp, grads):
    """min(1, clip / (global norm + eps)) for clip = hp[CLIP] > 0. The sum of squares stays in the
    grads' dtype (as torch's does), so float32 kernels never widen. Compiled apart from the updates
    (``EXACT_OPTIONS``), with the project options: the sum vectorises only with "reassoc"."""
    one = hp.dtype.type(1.0)
    clip = hp[CLIP]
    total = hp.dtype.type(0.0)
    for l in range(len(grads)):
        gW = _flat(grads[l][0])
        gb = grads[l][1]
        for i in range(gW.size):
            total += gW[i] * gW[i]
        for i in range(gb.size):
            total += gb[i] * gb[i]
    scale = clip / (math.sqrt(total) + hp.dtype.type(CLIP_EPS))
    return scale if scale < one else one  # NaN norm -> NaN scale, as in torch


def moment(slots, k, fallback):
    """``slots[k]`` when the tuple has a k-th entry, else ``fallback`` (k a constant); jitted only."""
    raise NotImplementedError("moment is only callable from compiled kernels")


@overload(moment, prefer_literal=True, inline="always")
def _moment_typed(slots, k, fallback):
    # Resolved while typing: an optimizer's slots tuple holds only the moments it uses, so a kernel
    # written for three slots compiles for none (plain SGD) to three (centered RMSprop with momentum).
    if not isinstance(k, types.IntegerLiteral):
        return None
    index = k.literal_value
    if index < len(slots):
        return lambda slots, k, fallback: slots[index]
    return lambda slots, k, fallback: fallback


@jit(options=EXACT_OPTIONS)
def update_into(code, hp, params, grads, slots, params_out, slots_out):
    """Apply the optimizer ``code`` to every (W, b) pair of ``params``.

    params, grads, params_out: tuples of (W, b). slots / slots_out: the moments the optimizer
    uses, in its state's field order, each a params-shaped tuple (sgd: () or (momentum_buffer,);
    rmsprop: square_avg[, grad_avg if centered][, momentum_buffer]; adagrad: (sum,); adam:
    (exp_avg, exp_avg_sq)). Unused moments cost nothing: each array passed to a kernel costs
    ~0.1 us to unbox, and the old three padded slot tuples were 36 arrays for plain SGD.

    One branch on the optimizer per array, not per element, and plain SGD skips the slots
    altogether: its update of the tiny net's 5.3k params went from 5.2 us to 1.6 us.
    """
    gscale = _clip_scale(hp, grads) if hp[CLIP] > 0 else hp.dtype.type(1.0)
    streams = _streams(params_out)
    # A constant while compiling (Numba rewrites len() of a tuple argument), so the optimizer
    # ladder in _update_array compiles only the optimizers with this many moments.
    n_slots = len(slots_out)
    if code == SGD and hp[SGD_MOMENTUM] == 0 and not streams:
        # No slots: skip the flat views of the unused ones (27 reshapes, ~0.5 us on the tiny net).
        for l in range(len(params)):
            _sgd(hp, gscale, _flat(params[l][0]), _flat(grads[l][0]), params[l][1], _flat(params_out[l][0]),
                 params[l][1])
            _sgd(hp, gscale, params[l][1], grads[l][1], params[l][1], params_out[l][1], params[l][1])
        return
    s0, s1, s2 = moment(slots, 0, params), moment(slots, 1, params), moment(slots, 2, params)
    o0, o1, o2 = moment(slots_out, 0, params_out), moment(slots_out, 1, params_out), moment(slots_out, 2, params_out)
    if code == RMSPROP and hp[RMS_CENTERED] == 0:  # no grad_avg: the momentum buffer comes second
        s2, o2 = s1, o1
    b0 = params[0][1]
    scratch = np.empty((4, _CHUNK_BYTES // b0.itemsize if streams else 0), dtype=b0.dtype)
    for l in range(len(params)):
        # (W, b) is a heterogeneous pair: Numba indexes it with literal 0 and 1 only.
        _update_matrix(code, hp, gscale, _flat(params[l][0]), _flat(grads[l][0]),
                       _flat(s0[l][0]), _flat(s1[l][0]), _flat(s2[l][0]), _flat(params_out[l][0]),
                       _flat(o0[l][0]), _flat(o1[l][0]), _flat(o2[l][0]), n_slots, scratch)
        _update_array(code, hp, gscale, params[l][1], grads[l][1], s0[l][1], s1[l][1], s2[l][1],
                      params_out[l][1], o0[l][1], o1[l][1], o2[l][1], n_slots)
    if streams:
        store_fence()
