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
from numba.extending import intrinsic, overload

from . import simd, views, vmath
from ._config import OPTIONS, jit, jit_inline
from .forms import FormTable, fill_nan

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


def _bias_activate_code(code, z, b):
    """bias_activate_inplace's loop for a literal code (jitted only)."""
    raise NotImplementedError("jitted only")


def _chain_derivative_code(code, z, a, d):
    """chain_derivative_inplace's loop for a literal code (jitted only)."""
    raise NotImplementedError("jitted only")


@overload(_bias_activate_code, jit_options=OPTIONS)
def _bias_activate_code_typed(code, z, b):
    if not isinstance(code, types.IntegerLiteral):
        return None
    f = _ACTIVATE[code.literal_value]
    if code.literal_value == TANH and all(
            isinstance(a, types.Array) and a.layout == "C" and a.dtype == z.dtype for a in (z, b)) \
            and z.dtype in _TANH_VECTOR:
        tanh_vector = _TANH_VECTOR[z.dtype]
        return lambda code, z, b: _tanh_rows(tanh_vector, z, b)
    return lambda code, z, b: _activate_rows(f, z, b)


@overload(_chain_derivative_code, jit_options=OPTIONS)
def _chain_derivative_code_typed(code, z, a, d):
    if not isinstance(code, types.IntegerLiteral):
        return None
    f_prime = _DERIVATIVE[code.literal_value]
    return lambda code, z, a, d: _chain_derivative_rows(f_prime, z, a, d)


# The forms: one compiled function per activation code, direction and dtype, called from a table
# (``forms.FormTable``). All nine were compiled into every kernel (bias_activate_inplace alone
# 6.9 s, chain_derivative_inplace 3.6 s, then optimised again as part of every kernel calling
# them), and a net uses one or two: first use of a tiny tanh net (import, train_step, forward;
# empty cache; Emerald Rapids, a slow hour, old and new taking turns) 39.5-41.9 s -> 30.0-30.1 s.

@jit
def _activate_form(code, z, b):
    """z[i, j] = f(z[i, j] + b[j]) for one literal code (compiled per code: ``ensure_forms``)."""
    _bias_activate_code(code, z, b)


@jit
def _derivative_form(code, z, a, d):
    """d[i, j] *= f'(z[i, j]) for one literal code (compiled per code: ``ensure_forms``)."""
    _chain_derivative_code(code, z, a, d)


FORWARD, BACKWARD = 0, 1


def _argtypes(direction, dtype):
    matrix, row = types.Array(dtype, 2, "C"), types.Array(dtype, 1, "C")
    return (matrix, row) if direction == FORWARD else (matrix, matrix, matrix)


FORMS = FormTable("activation", (_activate_form, _derivative_form), len(_ACTIVATE), _argtypes)


def ensure_forms(codes, dtype):
    """Make the forms of these activation codes callable from the kernels in dtype (a NumPy
    dtype: float32 or float64), compiling or loading each that is not yet. Every kernel that
    takes activation codes needs them ensured for its dtype first (``fastnn._codes``): a kernel
    that meets a form not ensured writes NaN where its output would go."""
    FORMS.ensure((FORWARD, BACKWARD), codes, dtype)


@intrinsic
def _activate_through_table(typingctx, code, z, b):
    """True, having run the form of ``code`` on (z, b); False if that form is not ensured (or
    ``code`` is not one)."""
    return FORMS.call(FORWARD, code, (z, b))


@intrinsic
def _derivative_through_table(typingctx, code, z, a, d):
    """True, having run the derivative form of ``code`` on (z, a, d); False if not ensured."""
    return FORMS.call(BACKWARD, code, (z, a, d))


@jit
def bias_activate_inplace(code, z, b):
    """z[i, j] = f(z[i, j] + b[j]), through the form of ``code`` (``ensure_forms``; NaN in z if
    it is not ensured).

    In place, one array: the loop has no aliasing for LLVM to rule out, so it vectorises (with a
    separate output that might alias the input, the tanh loop ran scalar, 5x slower).
    """
    if not _activate_through_table(code, z, b):
        fill_nan(z)


@jit
def chain_derivative_inplace(code, z, a, d):
    """d[i, j] *= f'(z[i, j]): turns dL/da into dL/dz (NaN in d if the form of ``code`` is not
    ensured)."""
    if code != IDENTITY and not _derivative_through_table(code, z, a, d):
        fill_nan(d)
