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
from ._config import OPTIONS, jit, jit_inline

IDENTITY, RELU, LEAKY_RELU, ELU, SIGMOID, TANH, SOFTPLUS, GELU, SILU = range(9)

LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0


# The scalar forms, one per code. f(z):
_ACTIVATE = {
    IDENTITY: jit_inline(lambda z: z),
    RELU: jit_inline(lambda z: type(z)(0.0) if z < type(z)(0.0) else z),
    LEAKY_RELU: jit_inline(lambda z: type(z)(LEAKY_SLOPE) * z if z < type(z)(0.0) else z),
    # expm1 computed for every z, then selected: with the call in a branch the loop ran at half
    # the speed (LLVM masks the branch rather than speculating it).
    ELU: jit_inline(lambda z: type(z)(ELU_ALPHA) * vmath.expm1(min(z, type(z)(0.0))) if z < type(z)(0.0) else z),
    SIGMOID: jit_inline(lambda z: vmath.sigmoid(z)),
    TANH: jit_inline(lambda z: vmath.tanh(z)),
    SOFTPLUS: jit_inline(lambda z: vmath.softplus(z)),
    GELU: jit_inline(lambda z: vmath.gelu(z)),
    SILU: jit_inline(lambda z: vmath.silu(z)),
}


@jit_inline
def _silu_derivative(z):
    one = type(z)(1.0)
    s = vmath.sigmoid(z)
    return s * (one + z * (one - s))


# f'(z), given the pre-activation z and the activation a = f(z), whichever is cheaper; z may be a
# itself unless ``needs_z(code)``:
#   identity: 1            relu: 1 if z > 0 else 0        leaky_relu: 1 if z > 0 else slope
#   elu: 1 if z > 0 else alpha e^z (not a + alpha, which cancels to 0 where e^z is tiny)
#   sigmoid: a (1 - a)     tanh: 1 - a^2                  softplus: sigma(z)
#   gelu: Phi(z) + z phi(z), phi(z) = e^(-z^2/2) / sqrt(2 pi)
#   silu: sigma(z) (1 + z (1 - sigma(z)))
# A NaN z gives NaN whatever the form says (``_chain_derivative_rows``).
_DERIVATIVE = {
    IDENTITY: jit_inline(lambda z, a: type(z)(1.0)),
    RELU: jit_inline(lambda z, a: type(z)(1.0) if z > type(z)(0.0) else type(z)(0.0)),
    LEAKY_RELU: jit_inline(lambda z, a: type(z)(1.0) if z > type(z)(0.0) else type(z)(LEAKY_SLOPE)),
    # exp computed for every z, as in elu's f
    ELU: jit_inline(lambda z, a: type(z)(1.0) if z > type(z)(0.0) else type(z)(ELU_ALPHA) * vmath.exp(min(z, type(z)(0.0)))),
    SIGMOID: jit_inline(lambda z, a: a * (type(a)(1.0) - a)),
    TANH: jit_inline(lambda z, a: type(a)(1.0) - a * a),
    SOFTPLUS: jit_inline(lambda z, a: vmath.sigmoid(z)),
    GELU: jit_inline(lambda z, a: vmath.gelu_derivative(z)),
    SILU: jit_inline(lambda z, a: _silu_derivative(z)),
}


@jit_inline
def needs_z(code):
    """True for the activations whose derivative needs the pre-activation z. For the others,
    the derivative's form given (a, a) is f'(z) bit for bit: relu and leaky_relu have a > 0
    exactly where z > 0, and a NaN z gives a NaN a. elu's derivative alpha e^z is not a function
    of a to any useful precision where a is near -alpha."""
    return code == ELU or code == SOFTPLUS or code == GELU or code == SILU


@jit_inline
def _activate_rows(f, z, b):
    """z[i, j] = f(z[i, j] + b[j]), element by element (LLVM vectorises it)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            z[i, j] = f(z[i, j] + b[j])


@jit_inline
def _chain_derivative_rows(f_prime, z, a, d):
    """d[i, j] *= f'(z[i, j]), NaN where z is NaN (relu's form and others would give a finite
    constant)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            zij = z[i, j]
            g = f_prime(zij, a[i, j])
            d[i, j] *= zij if zij != zij else g


@jit_inline
def _tanh_rows(tanh_vector, z, b):
    """z[i, j] = tanh(z[i, j] + b[j]) in whole vectors through ``tanh_vector``
    (``vmath.tanh_vector_float32`` or ``_float64``). Rows of whole vectors take the bias on the
    way, two vectors at a time (two independent chains). Other rows get the bias first, and then z
    is one flat run of vectors, with fewer than one vector left for the scalar form: rows of 7
    float64 values, 3.2 -> 1.1 ns per value against a scalar tail in every row (a separate bias
    pass for all rows costs float32 rows of 64 ~10%)."""
    n, m = z.shape
    w = simd.width(z)
    flat = views.whole(z)  # all rows as one run of vectors
    if m % w == 0:
        pairs = m - m % (2 * w)
        for i in range(n):
            at = i * m
            for j in range(0, pairs, 2 * w):
                t0 = tanh_vector(simd.vadd(simd.vload(flat, at + j), simd.vload(b, j)))
                t1 = tanh_vector(simd.vadd(simd.vload(flat, at + j + w), simd.vload(b, j + w)))
                simd.vstore(flat, at + j, t0)
                simd.vstore(flat, at + j + w, t1)
            if pairs < m:
                last = simd.vadd(simd.vload(flat, at + pairs), simd.vload(b, pairs))
                simd.vstore(flat, at + pairs, tanh_vector(last))
        return
    for i in range(n):
        for j in range(m):
            z[i, j] += b[j]
    total = n * m
    whole = total - total % w
    for j in range(0, whole, w):
        simd.vstore(flat, j, tanh_vector(simd.vload(flat, j)))
    for j in range(whole, total):
        flat[j] = vmath.tanh(flat[j])


_TANH_VECTOR = {types.float32: vmath.tanh_vector_float32, types.float64: vmath.tanh_vector_float64}


def _bias_activate_code(code, z, b, unused):
    """bias_activate_inplace for a literal code; ``unused`` fills _with_constant_code's fourth
    argument (jitted only)."""
    raise NotImplementedError("jitted only")


def _chain_derivative_code(code, z, a, d):
    """chain_derivative_inplace for a literal code (jitted only)."""
    raise NotImplementedError("jitted only")


# Overloads keyed by the literal code: each code's loop is compiled as a function of its own, with
# that code's form alone. Inlined with all nine forms and the constant left for LLVM to fold,
# every arm of the dispatch carried all nine through Numba's typing and lowering: the first
# compile of bias_activate_inplace took 15 s (float32, one signature, Sapphire Rapids).
@overload(_bias_activate_code, jit_options=OPTIONS)
def _bias_activate_code_typed(code, z, b, unused):
    if not isinstance(code, types.IntegerLiteral):
        return None
    f = _ACTIVATE[code.literal_value]
    if code.literal_value == TANH and all(
            isinstance(a, types.Array) and a.layout == "C" and a.dtype == z.dtype for a in (z, b)) \
            and z.dtype in _TANH_VECTOR:
        tanh_vector = _TANH_VECTOR[z.dtype]
        return lambda code, z, b, unused: _tanh_rows(tanh_vector, z, b)
    return lambda code, z, b, unused: _activate_rows(f, z, b)


@overload(_chain_derivative_code, jit_options=OPTIONS)
def _chain_derivative_code_typed(code, z, a, d):
    if not isinstance(code, types.IntegerLiteral):
        return None
    f_prime = _DERIVATIVE[code.literal_value]
    return lambda code, z, a, d: _chain_derivative_rows(f_prime, z, a, d)


@jit_inline
def _with_constant_code(code, rows, x, y, w):
    """rows(code, x, y, w), with ``code`` passed as a literal constant (one compiled loop per
    code): relu on a 64x128 float32 block takes 1.9 us this way, 36 us with the branch on the
    code left inside the loop. The ladder below is that dispatch, one arm per code.
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
    _with_constant_code(code, _bias_activate_code, z, b, z)


@jit
def chain_derivative_inplace(code, z, a, d):
    """d[i, j] *= f'(z[i, j]): turns dL/da into dL/dz."""
    if code != IDENTITY:
        _with_constant_code(code, _chain_derivative_code, z, a, d)
