"""Optimizer updates with PyTorch's rules, one generic kernel selected by an integer code.

``update_into`` reads params, grads and the optimizer's moment slots and writes the updated values
into separate ``out`` arrays (which may alias the inputs: every element is read before it is
written). Slots are always three params-shaped tuples; an optimizer that needs fewer receives
zero-size placeholders it never touches.

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

from ._config import jit, jit_inline

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
def _update_flat(code, hp, gscale, p, g, s0, s1, s2, p_out, s0_out, s1_out, s2_out):
    """One parameter array (flattened) and its three slots, gradients scaled by ``gscale`` (the
    clipping factor, 1 without clipping); see the module docstring for the rules."""
    one = hp.dtype.type(1.0)
    lr = hp[LR]
    wd = hp[WD]
    n = p.size
    if code == SGD:
        mu = hp[SGD_MOMENTUM]
        damp = one - hp[SGD_DAMPENING]
        nesterov = hp[SGD_NESTEROV] != 0
        first = hp[SGD_FIRST] != 0
        for i in range(n):
            gi = g[i] * gscale + wd * p[i]
            if mu != 0:
                b = gi if first else mu * s0[i] + damp * gi
                s0_out[i] = b
                gi = gi + mu * b if nesterov else b
            p_out[i] = p[i] - lr * gi
    elif code == RMSPROP:
        alpha = hp[RMS_ALPHA]
        eps = hp[RMS_EPS]
        mu = hp[RMS_MOMENTUM]
        centered = hp[RMS_CENTERED] != 0
        for i in range(n):
            gi = g[i] * gscale + wd * p[i]
            v = alpha * s0[i] + (one - alpha) * gi * gi
            s0_out[i] = v
            if centered:
                m = alpha * s1[i] + (one - alpha) * gi
                s1_out[i] = m
                v = v - m * m
            d = math.sqrt(v) + eps
            if mu != 0:
                b = mu * s2[i] + gi / d
                s2_out[i] = b
                p_out[i] = p[i] - lr * b
            else:
                p_out[i] = p[i] - lr * gi / d
    elif code == ADAGRAD:
        eps = hp[ADAGRAD_EPS]
        for i in range(n):
            gi = g[i] * gscale + wd * p[i]
            s = s0[i] + gi * gi
            s0_out[i] = s
            p_out[i] = p[i] - lr * gi / (math.sqrt(s) + eps)
    else:  # ADAM
        b1 = hp[ADAM_BETA1]
        b2 = hp[ADAM_BETA2]
        eps = hp[ADAM_EPS]
        step_size = lr / hp[ADAM_BC1]
        bc2_sqrt = hp[ADAM_BC2_SQRT]
        decay = hp[ADAM_DECAY]
        for i in range(n):
            pi = p[i] * decay
            gi = g[i] * gscale + wd * p[i]
            m = b1 * s0[i] + (one - b1) * gi
            v = b2 * s1[i] + (one - b2) * gi * gi
            s0_out[i] = m
            s1_out[i] = v
            p_out[i] = pi - step_size * m / (math.sqrt(v) / bc2_sqrt + eps)


@jit_inline
def _flat(a):
    return a.reshape(a.size)


@jit_inline
def _clip_scale(hp, grads):
    """min(1, clip / (global norm + eps)) for hp[CLIP] > 0, else 1. The sum of squares stays in the
    grads' dtype (as torch's does), so float32 kernels never widen."""
    one = hp.dtype.type(1.0)
    clip = hp[CLIP]
    if clip <= 0:
        return one
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


@jit
def update_into(code, hp, params, grads, slots, params_out, slots_out):
    """Apply the optimizer ``code`` to every (W, b) pair of ``params``.

    params, grads, params_out: tuples of (W, b); slots, slots_out: 3-tuples of such tuples.
    """
    s0, s1, s2 = slots
    o0, o1, o2 = slots_out
    gscale = _clip_scale(hp, grads)
    for l in range(len(params)):
        # (W, b) is a heterogeneous pair: Numba indexes it with literal 0 and 1 only.
        _update_flat(code, hp, gscale, _flat(params[l][0]), _flat(grads[l][0]),
                     _flat(s0[l][0]), _flat(s1[l][0]), _flat(s2[l][0]), _flat(params_out[l][0]),
                     _flat(o0[l][0]), _flat(o1[l][0]), _flat(o2[l][0]))
        _update_flat(code, hp, gscale, params[l][1], grads[l][1], s0[l][1], s1[l][1], s2[l][1],
                     params_out[l][1], o0[l][1], o1[l][1], o2[l][1])
