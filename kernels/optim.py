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
           p -= (lr / bc1) m / (sqrt(v) r + eps),  bc_i = 1 - b_i^t,  r = 1 / sqrt(bc2)
           (r comes in hp, from float64: a multiply where torch divides by sqrt(bc2), so one
           division per element, not two; the results differ from torch's by rounding)
"""

import math

import numpy as np
from numba.core import types
from numba.extending import overload

from . import simd, views
from ._config import EXACT_OPTIONS, jit, jit_inline
from .stream import LINE_BYTES, line_offset, store_fence, stream_into

SGD, RMSPROP, ADAGRAD, ADAM = range(4)
# The rules by the names fastnn's optimizer records give (fastnn/optim.py, Rule.kernel).
RULE_CODES = {"sgd": SGD, "rmsprop": RMSPROP, "adagrad": ADAGRAD, "adam": ADAM}

# hp layout: every rule reads the learning rate, the coupled weight decay and the clipping norm
# (0 = no clipping) at LR, WD, CLIP; its own hyperparameters follow, in the order HP_NAMES gives.
# fastnn fills hp by these names (fastnn/_codes.py), so a name here is all it needs to know.
LR, WD, CLIP = 0, 1, 2
HP_NAMES = {
    SGD: ("momentum", "dampening", "nesterov", "first_step"),
    RMSPROP: ("alpha", "eps", "momentum", "centered"),
    ADAGRAD: ("eps",),  # LR holds the decayed lr / (1 + (t - 1) lr_decay)
    ADAM: ("beta1", "beta2", "eps", "bias_correction1", "inv_sqrt_bias_correction2", "decay"),
}
HP_SHARED = ("lr", "weight_decay", "clip_norm")
HP_SIZE = len(HP_SHARED) + max(len(names) for names in HP_NAMES.values())


def _indices(rule):
    return range(len(HP_SHARED), len(HP_SHARED) + len(HP_NAMES[rule]))


SGD_MOMENTUM, SGD_DAMPENING, SGD_NESTEROV, SGD_FIRST = _indices(SGD)
RMS_ALPHA, RMS_EPS, RMS_MOMENTUM, RMS_CENTERED = _indices(RMSPROP)
(ADAGRAD_EPS,) = _indices(ADAGRAD)
ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_BC1, ADAM_BC2_INV_SQRT, ADAM_DECAY = _indices(ADAM)

# torch.nn.utils.clip_grad_norm_ divides by (norm + 1e-6).
CLIP_EPS = 1e-6

# The rules below work on one flat array. ``src`` = (p, g, s0, s1, s2): the parameter, its
# gradient and up to three moment slots; ``dst`` = (p_out, o0, o1, o2) receives the new values.
# Slots a rule does not use are never touched (the caller passes any array of the right type).
# Each rule unpacks its arrays and reads its hyperparameters alike, and stays a function of its
# own so that only the rules an optimizer uses are compiled.


@jit_inline
def _sgd(hp, gscale, src, dst):
    """SGD; s0 is the momentum buffer (unused without momentum)."""
    p, g, b = src[0], src[1], src[2]
    p_out, b_out = dst[0], dst[1]
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


# RMSprop variants: bit 0 centered, bit 1 momentum.
RMS_PLAIN, RMS_CENTERED_ONLY, RMS_MOMENTUM_ONLY, RMS_CENTERED_MOMENTUM = range(4)


@jit_inline
def _rmsprop(variant, hp, gscale, src, dst):
    """RMSprop; slots (v, m, b) = (square_avg, grad_avg, momentum buffer). ``variant`` is a
    constant at every call site, so each of the four variants is a loop without branches."""
    centered = variant & 1
    momentum = variant & 2
    p, g, v, m, b = src
    p_out, v_out, m_out, b_out = dst
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
def _adagrad(hp, gscale, src, dst):
    """Adagrad; s0 is the sum of squared gradients."""
    p, g, s = src[0], src[1], src[2]
    p_out, s_out = dst[0], dst[1]
    lr = hp[LR]
    wd = hp[WD]
    eps = hp[ADAGRAD_EPS]
    for i in range(p.size):
        gi = g[i] * gscale + wd * p[i]
        si = s[i] + gi * gi
        s_out[i] = si
        p_out[i] = p[i] - lr * gi / (math.sqrt(si) + eps)


@jit_inline
def _adam(hp, gscale, src, dst):
    """Adam and AdamW; slots (m, v) = (exp_avg, exp_avg_sq)."""
    p, g, m, v = src[0], src[1], src[2], src[3]
    p_out, m_out, v_out = dst[0], dst[1], dst[2]
    one = hp.dtype.type(1.0)
    wd = hp[WD]
    b1 = hp[ADAM_BETA1]
    b2 = hp[ADAM_BETA2]
    eps = hp[ADAM_EPS]
    step_size = hp[LR] / hp[ADAM_BC1]
    inv_bc2 = hp[ADAM_BC2_INV_SQRT]
    decay = hp[ADAM_DECAY]
    # In explicit vectors: with three outputs and four inputs that may alias, LLVM needs more
    # runtime overlap checks than it allows and left this loop scalar (Adam on the 9.6k params of
    # 64-128-10: 15.0 us). The same operations in the same order as the scalar tail below, so
    # every element gets the same bits wherever it sits. Each vector is read before it is written.
    # Divisions and square roots bound this loop: dividing by sqrt(bc2) too, Adam on the 6.9k
    # params of 32-64-64-10 took 4.67 us against 3.48 multiplying (float32, one thread, Zen 4).
    w = simd.width(p)
    whole = p.size - p.size % w
    v_gscale, v_wd, v_b1, v_b2 = simd.vsplat(gscale), simd.vsplat(wd), simd.vsplat(b1), simd.vsplat(b2)
    v_1b1, v_1b2, v_eps = simd.vsplat(one - b1), simd.vsplat(one - b2), simd.vsplat(eps)
    v_step, v_inv_bc2, v_decay = simd.vsplat(step_size), simd.vsplat(inv_bc2), simd.vsplat(decay)
    for i in range(0, whole, w):
        pv = simd.vload(p, i)
        gv = simd.vadd(simd.vmul(simd.vload(g, i), v_gscale), simd.vmul(v_wd, pv))
        mv = simd.vadd(simd.vmul(v_b1, simd.vload(m, i)), simd.vmul(v_1b1, gv))
        vv = simd.vadd(simd.vmul(v_b2, simd.vload(v, i)), simd.vmul(simd.vmul(v_1b2, gv), gv))
        step = simd.vdiv(simd.vmul(v_step, mv), simd.vadd(simd.vmul(simd.vsqrt(vv), v_inv_bc2), v_eps))
        simd.vstore(m_out, i, mv)
        simd.vstore(v_out, i, vv)
        simd.vstore(p_out, i, simd.vsub(simd.vmul(pv, v_decay), step))
    for i in range(whole, p.size):
        gi = g[i] * gscale + wd * p[i]
        mi = b1 * m[i] + (one - b1) * gi
        vi = b2 * v[i] + (one - b2) * gi * gi
        m_out[i] = mi
        v_out[i] = vi
        p_out[i] = p[i] * decay - step_size * mi / (math.sqrt(vi) * inv_bc2 + eps)


def _update_array(code, hp, gscale, src, dst, slots):
    """One flat parameter array and its moments, for the optimizer ``code`` whose state has
    ``len(slots)`` moments (slots: update_into's slots_out, read only for its type); jitted only."""
    raise NotImplementedError("_update_array is only callable from compiled kernels")


@overload(_update_array, inline="always")
def _update_array_typed(code, hp, gscale, src, dst, slots):
    # The rule ladder is chosen while typing, by the number of moments, so only the optimizers
    # with that many are compiled. First compile of update_into alone on the tiny net, float32,
    # with every rule typed and the other counts' branches left to LLVM to drop, against this:
    # plain SGD 8.1-8.3 -> 4.6-6.1 s, Adam 9.1-10.4 -> 8.3-9.7 s.
    # Each loop has no branch inside, so LLVM vectorises it whatever ``code`` is.
    n_slots = len(slots)
    if n_slots == 0:  # sgd without momentum
        def without_moments(code, hp, gscale, src, dst, slots):
            _sgd(hp, gscale, src, dst)
        return without_moments
    if n_slots == 1:  # sgd with momentum, rmsprop, adagrad
        def one_moment(code, hp, gscale, src, dst, slots):
            if code == SGD:
                _sgd(hp, gscale, src, dst)
            elif code == RMSPROP:
                _rmsprop(RMS_PLAIN, hp, gscale, src, dst)
            else:
                _adagrad(hp, gscale, src, dst)
        return one_moment
    if n_slots == 2:  # rmsprop centered or with momentum; adam
        def two_moments(code, hp, gscale, src, dst, slots):
            if code == RMSPROP:
                if hp[RMS_CENTERED] != 0:
                    _rmsprop(RMS_CENTERED_ONLY, hp, gscale, src, dst)
                else:
                    _rmsprop(RMS_MOMENTUM_ONLY, hp, gscale, src, dst)
            else:
                _adam(hp, gscale, src, dst)
        return two_moments

    def three_moments(code, hp, gscale, src, dst, slots):  # rmsprop centered with momentum
        _rmsprop(RMS_CENTERED_MOMENTUM, hp, gscale, src, dst)
    return three_moments


# A weight matrix of at least this many bytes is written by streaming stores (``_update_matrix``);
# smaller ones, which the next step may still find in the caches, by plain stores. Chained Adam
# train_steps on a w-w-w-10 relu net, batch 64, streaming every matrix against none: 2 MiB matrices
# 5.81 against 5.21 ms (slower), 4 MiB 12.64 against 12.78, 8 MiB 23.5 against 25.2 (faster).
STREAM_MIN_BYTES = 4 << 20
# One scratch row per output, which stays in L2 between the computation and the streaming stores.
# Adam on the large benchmark net (8.4M float32 params): rows of 16 KiB 15.3 ms, 64 KiB 13.5 ms,
# 256 KiB 13.7-14.3 ms.
_CHUNK_BYTES = 64 << 10


@jit_inline
def _src_slice(src, lo, hi):
    """src = (p, g, s0, s1, s2) with each array sliced to [lo:hi]."""
    p, g, s0, s1, s2 = src
    return (p[lo:hi], g[lo:hi], s0[lo:hi], s1[lo:hi], s2[lo:hi])


@jit_inline
def _update_matrix(code, hp, gscale, src, dst, slots, scratch):
    """``_update_array`` for one flat array (a weight matrix flattened, or a bias); an array of
    STREAM_MIN_BYTES or more writes its outputs by streaming stores.

    Writes p_out and the first ``len(slots)`` slots of dst (o2 may be o1, see update_into). To
    stream, the update is computed a chunk at a time into the rows of ``scratch`` (4 x chunk), and
    the rows are streamed to the outputs (kernels.stream). That needs every written output at the
    same offset from a 64-byte boundary (fastnn allocates large arrays 64-byte aligned); elements
    before the first boundary, the tail after the last whole line, small matrices and matrices
    whose outputs are not aligned alike take plain stores. One call site of ``_update_array`` for
    every case: each inlined copy of the optimizers' loops adds seconds to the first compile.
    """
    p_out, o0, o1, o2 = dst
    n_slots = len(slots)
    size = p_out.itemsize
    n = p_out.size
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
            part = (scratch[0, :hi - lo], scratch[1, :hi - lo], scratch[2, :hi - lo], t2[:hi - lo])
        else:
            hi = head if lo < head else n
            part = (p_out[lo:hi], o0[lo:hi], o1[lo:hi], o2[lo:hi])
        _update_array(code, hp, gscale, _src_slice(src, lo, hi), part, slots)
        if streamed:
            for k in range(n_slots + 1):
                stream_into(dst[k], lo, part[k], hi - lo)
        lo = hi


@jit_inline
def _streams(params_out):
    """True when some weight matrix is large enough to be written by streaming stores (a bias
    never is unless its W is: W has at least as many elements)."""
    for l in range(len(params_out)):
        if params_out[l][0].nbytes >= STREAM_MIN_BYTES:
            return True
    return False


@jit
def _clip_scale(hp, grads):
    """min(1, clip / (global norm + eps)) for clip = hp[CLIP] > 0. The sum of squares stays in the
    grads' dtype (as torch's does), so float32 kernels never widen. Compiled apart from the updates
    (``EXACT_OPTIONS``), with the project options: the sum vectorises only with "reassoc"."""
    one = hp.dtype.type(1.0)
    clip = hp[CLIP]
    total = hp.dtype.type(0.0)
    for l in range(len(grads)):
        gW = views.whole(grads[l][0])
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


@jit_inline
def _plain_sgd(hp, gscale, params, grads, params_out):
    """SGD without momentum over every array. No slots: the arrays themselves stand in for them
    (never read), which spares making flat views of slots that do not exist."""
    at = views.array_at  # not a jitted helper: see its docstring
    for k in range(2 * len(params)):
        p, g, q = at(params, k), at(grads, k), at(params_out, k)
        _sgd(hp, gscale, (p, g, p), (q, q))


@jit_inline
def _moment_sets(code, hp, params, slots, params_out, slots_out):
    """(s0, s1, s2, o0, o1, o2): the moments the rules read and write, params standing in for the
    ones the optimizer does not use; centered-less RMSprop's momentum buffer comes second."""
    s0, s1, s2 = moment(slots, 0, params), moment(slots, 1, params), moment(slots, 2, params)
    o0, o1, o2 = moment(slots_out, 0, params_out), moment(slots_out, 1, params_out), moment(slots_out, 2, params_out)
    if code == RMSPROP and hp[RMS_CENTERED] == 0:
        s2, o2 = s1, o1
    return s0, s1, s2, o0, o1, o2


@jit(options=EXACT_OPTIONS)
def update_into(code, hp, params, grads, slots, params_out, slots_out):
    """Apply the optimizer ``code`` to every (W, b) pair of ``params``.

    params, grads, params_out: tuples of (W, b). slots / slots_out: the moments the optimizer
    uses, in its state's field order, each a params-shaped tuple (sgd: () or (momentum_buffer,);
    rmsprop: square_avg[, grad_avg if centered][, momentum_buffer]; adagrad: (sum,); adam:
    (exp_avg, exp_avg_sq)). Only the used moments are passed: every array argument costs time to
    unbox on each call. One branch on the optimizer per array, not per element. Weight matrices
    of STREAM_MIN_BYTES or more are written by streaming stores (``_update_matrix``).
    """
    gscale = _clip_scale(hp, grads) if hp[CLIP] > 0 else hp.dtype.type(1.0)
    streams = _streams(params_out)
    if code == SGD and hp[SGD_MOMENTUM] == 0 and not streams:
        _plain_sgd(hp, gscale, params, grads, params_out)
        return
    s0, s1, s2, o0, o1, o2 = _moment_sets(code, hp, params, slots, params_out, slots_out)
    at = views.array_at
    b0 = params[0][1]
    scratch = np.empty((4, _CHUNK_BYTES // b0.itemsize if streams else 0), dtype=b0.dtype)
    # One loop over every array, W and b alike, so that the update rules are inlined once: each
    # inlined copy of them adds seconds to the first compile of every kernel that calls this.
    for k in range(2 * len(params)):
        src = (at(params, k), at(grads, k), at(s0, k), at(s1, k), at(s2, k))
        dst = (at(params_out, k), at(o0, k), at(o1, k), at(o2, k))
        _update_matrix(code, hp, gscale, src, dst, slots_out, scratch)
    if streams:
        store_fence()


@jit(options=EXACT_OPTIONS)
def update_small_into(code, hp, params, grads, slots, params_out, slots_out):
    """``update_into`` with plain stores only, for the fused kernels' nets (no matrix comes near
    STREAM_MIN_BYTES): the same values, without ``_update_matrix``'s chunking around each array,
    which cost ~0.1 us per array. Float32, one thread, Zen 4, in a compiled loop: Adam on 12
    arrays of 16-wide layers 3.62 -> 2.15 us, on 32-64-64-10 3.46 -> 3.07, on 64-128-10 3.9-4.2 ->
    3.05; SGD with momentum on 32-64-64-10 2.61 -> 2.0."""
    gscale = _clip_scale(hp, grads) if hp[CLIP] > 0 else hp.dtype.type(1.0)
    if code == SGD and hp[SGD_MOMENTUM] == 0:
        _plain_sgd(hp, gscale, params, grads, params_out)
        return
    s0, s1, s2, o0, o1, o2 = _moment_sets(code, hp, params, slots, params_out, slots_out)
    at = views.array_at
    # update_into's loop, written out: a helper taking these nine tuples would take a reference
    # to each of their arrays on every call (see views.array_at).
    for k in range(2 * len(params)):
        src = (at(params, k), at(grads, k), at(s0, k), at(s1, k), at(s2, k))
        dst = (at(params_out, k), at(o0, k), at(o1, k), at(o2, k))
        _update_array(code, hp, gscale, src, dst, slots_out)
