"""Activation functions and their derivatives, selected by a small integer code.

The codes are part of the contract between ``fastnn`` (which maps names to codes) and these
kernels. Fixed shape parameters follow PyTorch's defaults: leaky_relu slope 0.01, elu alpha 1.0,
gelu is the exact (erf) form.

Scalar helpers take the value in the array's dtype and write every constant as ``type(z)(c)``:
Numba does not apply NumPy 2's scalar promotion, so a bare ``0.5 * z`` on float32 would compute in
float64.

NaN propagates through every activation: comparisons are written so that a NaN input takes the
branch that returns it (``z < 0`` is false for NaN).
"""

import math

from . import vmath
from ._config import jit, jit_inline

IDENTITY, RELU, LEAKY_RELU, ELU, SIGMOID, TANH, SOFTPLUS, GELU, SILU = range(9)

LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0


@jit_inline
def activate(code, z):
    """f(z) for the activation ``code``."""
    zero = type(z)(0.0)
    if code == IDENTITY:
        return z
    if code == RELU:
        return zero if z < zero else z
    if code == LEAKY_RELU:
        return type(z)(LEAKY_SLOPE) * z if z < zero else z
    if code == ELU:
        return type(z)(ELU_ALPHA) * math.expm1(z) if z < zero else z
    if code == SIGMOID:
        return vmath.sigmoid(z)
    if code == TANH:
        return vmath.tanh(z)
    if code == SOFTPLUS:
        # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for large |z|.
        return max(z, zero) + math.log1p(math.exp(-abs(z))) if z == z else z
    if code == GELU:
        # z * Phi(z), Phi the standard normal CDF.
        return type(z)(0.5) * z * (type(z)(1.0) + math.erf(z * type(z)(0.7071067811865476)))
    # SILU
    return z * vmath.sigmoid(z)


@jit_inline
def derivative(code, z, a):
    """f'(z), given the pre-activation z and the activation a = f(z) (whichever is cheaper).

    identity: 1            relu: 1 if z > 0 else 0        leaky_relu: 1 if z > 0 else slope
    elu: 1 if z > 0 else a + alpha   (alpha e^z = a + alpha for z <= 0)
    sigmoid: a (1 - a)     tanh: 1 - a^2                  softplus: sigma(z)
    gelu: Phi(z) + z phi(z), phi(z) = e^(-z^2/2) / sqrt(2 pi)
    silu: sigma(z) (1 + z (1 - sigma(z)))
    """
    one = type(z)(1.0)
    zero = type(z)(0.0)
    if z != z:
        return z  # NaN in, NaN out: the branches below would return a finite constant
    if code == IDENTITY:
        return one
    if code == RELU:
        return one if z > zero else zero
    if code == LEAKY_RELU:
        return one if z > zero else type(z)(LEAKY_SLOPE)
    if code == ELU:
        return one if z > zero else a + type(z)(ELU_ALPHA)
    if code == SIGMOID:
        return a * (one - a)
    if code == TANH:
        return one - a * a
    if code == SOFTPLUS:
        return vmath.sigmoid(z)
    if code == GELU:
        cdf = type(z)(0.5) * (one + math.erf(z * type(z)(0.7071067811865476)))
        pdf = type(z)(0.3989422804014327) * math.exp(type(z)(-0.5) * z * z)
        return cdf + z * pdf
    s = vmath.sigmoid(z)
    return s * (one + z * (one - s))


@jit_inline
def _bias_activate_rows(code, z, b, a, keep_z):
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = z[i, j] + b[j]
            if keep_z:
                z[i, j] = v
            a[i, j] = activate(code, v)


@jit_inline
def _chain_derivative_rows(code, z, a, d):
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            d[i, j] *= derivative(code, z[i, j], a[i, j])


# The kernels below dispatch once on ``code`` and call an inlined loop with that code as a
# constant, so LLVM folds the branch chain in ``activate``/``derivative`` away and vectorises each
# loop. With the branch left inside the loop, relu on a 64x128 float32 block took 36 us (4.5 ns per
# element, branchy scalar code); dispatched like this it is one select per element.

@jit_inline
def _bias_activate(code, z, b, a, keep_z):
    if code == IDENTITY:
        _bias_activate_rows(IDENTITY, z, b, a, keep_z)
    elif code == RELU:
        _bias_activate_rows(RELU, z, b, a, keep_z)
    elif code == LEAKY_RELU:
        _bias_activate_rows(LEAKY_RELU, z, b, a, keep_z)
    elif code == ELU:
        _bias_activate_rows(ELU, z, b, a, keep_z)
    elif code == SIGMOID:
        _bias_activate_rows(SIGMOID, z, b, a, keep_z)
    elif code == TANH:
        _bias_activate_rows(TANH, z, b, a, keep_z)
    elif code == SOFTPLUS:
        _bias_activate_rows(SOFTPLUS, z, b, a, keep_z)
    elif code == GELU:
        _bias_activate_rows(GELU, z, b, a, keep_z)
    else:
        _bias_activate_rows(SILU, z, b, a, keep_z)


@jit
def bias_activate_into(code, z, b, a):
    """z[i, j] += b[j]; a[i, j] = f(z[i, j]).  ``a`` and ``z`` must be distinct arrays."""
    _bias_activate(code, z, b, a, True)


@jit
def bias_activate_inplace(code, z, b):
    """z[i, j] = f(z[i, j] + b[j]).

    Separate from ``bias_activate_into`` because passing one array as both ``z`` and ``a`` leaves
    LLVM unable to rule out aliasing, and the tanh loop then ran scalar: 10 us instead of ~2 us for
    the tiny net's two 32x64 layers.
    """
    _bias_activate(code, z, b, z, False)


@jit
def chain_derivative_inplace(code, z, a, d):
    """d[i, j] *= f'(z[i, j]): turns dL/da into dL/dz."""
    if code == IDENTITY:
        return
    elif code == RELU:
        _chain_derivative_rows(RELU, z, a, d)
    elif code == LEAKY_RELU:
        _chain_derivative_rows(LEAKY_RELU, z, a, d)
    elif code == ELU:
        _chain_derivative_rows(ELU, z, a, d)
    elif code == SIGMOID:
        _chain_derivative_rows(SIGMOID, z, a, d)
    elif code == TANH:
        _chain_derivative_rows(TANH, z, a, d)
    elif code == SOFTPLUS:
        _chain_derivative_rows(SOFTPLUS, z, a, d)
    elif code == GELU:
        _chain_derivative_rows(GELU, z, a, d)
    else:
        _chain_derivative_rows(SILU, z, a, d)
