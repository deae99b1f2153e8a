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

from numba.core import types
from numba.extending import overload

from . import simd, views, vmath
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
        # expm1 computed for every z, then selected: with the call in a branch the loop ran at
        # half the speed (LLVM masks the branch rather than speculating it).
        e = vmath.expm1(z if z < zero else zero)
        return type(z)(ELU_ALPHA) * e if z < zero else z
    if code == SIGMOID:
        return vmath.sigmoid(z)
    if code == TANH:
        return vmath.tanh(z)
    if code == SOFTPLUS:
        return vmath.softplus(z)
    if code == GELU:
        return vmath.gelu(z)
    # SILU
    return vmath.silu(z)


@jit_inline
def needs_z(code):
    """True for the activations whose derivative needs the pre-activation z. For the others,
    ``derivative(code, a, a)`` is f'(z) bit for bit: relu and leaky_relu have a > 0 exactly
    where z > 0, and a NaN z gives a NaN a. elu's derivative alpha e^z is not a function of a
    to any useful precision where a is near -alpha."""
    return code == ELU or code == SOFTPLUS or code == GELU or code == SILU


@jit_inline
def derivative(code, z, a):
    """f'(z), given the pre-activation z and the activation a = f(z) (whichever is cheaper); z may
    be a itself unless ``needs_z(code)``.

    identity: 1            relu: 1 if z > 0 else 0        leaky_relu: 1 if z > 0 else slope
    elu: 1 if z > 0 else alpha e^z (not a + alpha, which cancels to 0 where e^z is tiny)
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
        e = vmath.exp(z if z < zero else zero)  # unconditionally, as in activate
        return one if z > zero else type(z)(ELU_ALPHA) * e
    if code == SIGMOID:
        return a * (one - a)
    if code == TANH:
        return one - a * a
    if code == SOFTPLUS:
        return vmath.sigmoid(z)
    if code == GELU:
        return vmath.gelu_derivative(z)
    s = vmath.sigmoid(z)
    return s * (one + z * (one - s))


@jit_inline
def _bias_activate_rows_inplace(code, z, b, unused):
    """z[i, j] = f(z[i, j] + b[j]) (one array: no aliasing for LLVM to rule out)."""
    if code == TANH:
        _tanh_rows_inplace(z, b)
    else:
        _activate_rows(code, z, b)


@jit_inline
def _activate_rows(code, z, b):
    """z[i, j] = f(z[i, j] + b[j]), element by element (LLVM vectorises it)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            z[i, j] = activate(code, z[i, j] + b[j])


def _tanh_rows_inplace(z, b):
    """z[i, j] = tanh(z[i, j] + b[j]); jitted only."""
    raise NotImplementedError("jitted only")


@overload(_tanh_rows_inplace, inline="always")
def _tanh_rows_typed(z, b):
    if all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float32 for a in (z, b)):
        return _tanh_rows_float32
    return _tanh_rows_scalar


def _tanh_rows_scalar(z, b):
    _activate_rows(TANH, z, b)


def _tanh_rows_float32(z, b):
    """Whole vectors through ``vmath.tanh_vector`` (the same bits as the scalar form), two at a
    time, then one, the tail through the scalar form."""
    n, m = z.shape
    w = simd.width(z)
    whole = m - m % w
    pairs = whole - whole % (2 * w)
    flat = views.whole(z)  # one view for all rows: each view costs two atomic count updates
    for i in range(n):
        at = i * m
        for j in range(0, pairs, 2 * w):
            t0 = vmath.tanh_vector(simd.vadd(simd.vload(flat, at + j), simd.vload(b, j)))
            t1 = vmath.tanh_vector(simd.vadd(simd.vload(flat, at + j + w), simd.vload(b, j + w)))
            simd.vstore(flat, at + j, t0)
            simd.vstore(flat, at + j + w, t1)
        for j in range(pairs, whole, w):
            simd.vstore(flat, at + j, vmath.tanh_vector(simd.vadd(simd.vload(flat, at + j), simd.vload(b, j))))
        for j in range(whole, m):
            z[i, j] = vmath.tanh(z[i, j] + b[j])


@jit_inline
def _chain_derivative_rows(code, z, a, d):
    """d[i, j] *= f'(z[i, j])."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            d[i, j] *= derivative(code, z[i, j], a[i, j])


@jit_inline
def _with_constant_code(code, rows, x, y, w):
    """rows(code, x, y, w), with ``code`` passed as a literal constant.

    After inlining, ``activate``/``derivative`` see a constant code, LLVM folds their branch chain
    away and vectorises each loop: relu on a 64x128 float32 block takes 1.9 us this way, 36 us
    with the branch left inside the loop. The ladder below is that dispatch, one arm per code.
    """
    if code == IDENTITY:
        rows(IDENTITY, x, y, w)
    elif code == RELU:
        rows(RELU, x, y, w)
    elif code == LEAKY_RELU:
        rows(LEAKY_RELU, x, y, w)
    elif code == ELU:
        rows(ELU, x, y, w)
    elif code == SIGMOID:
        rows(SIGMOID, x, y, w)
    elif code == TANH:
        rows(TANH, x, y, w)
    elif code == SOFTPLUS:
        rows(SOFTPLUS, x, y, w)
    elif code == GELU:
        rows(GELU, x, y, w)
    else:
        rows(SILU, x, y, w)


@jit
def bias_activate_inplace(code, z, b):
    """z[i, j] = f(z[i, j] + b[j]).

    In place, one array: the loop has no aliasing for LLVM to rule out, so it vectorises (with a
    separate output that might alias the input, the tanh loop ran scalar, 5x slower). Every entry
    point (training, batch forward, the one-sample row kernel) uses this one kernel, which keeps
    the first compile short.
    """
    _with_constant_code(code, _bias_activate_rows_inplace, z, b, z)


@jit
def chain_derivative_inplace(code, z, a, d):
    """d[i, j] *= f'(z[i, j]): turns dL/da into dL/dz."""
    if code != IDENTITY:
        _with_constant_code(code, _chain_derivative_rows, z, a, d)
