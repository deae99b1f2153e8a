"""Vectorisable elementary functions for the kernels.

Numba 0.62+ has no SVML: ``math.tanh`` inside a kernel is a scalar libm call that stops LLVM from
vectorising the loop around it (a 64x128 float32 block: 106 us with ``math.tanh``, ~6 us for
NumPy's SIMD ``np.tanh``). The versions below are written in plain arithmetic (multiply, add,
divide, compare, and one bit-level step) so that each activation loop vectorises. float64 has
exp, expm1, tanh, sigmoid, silu (and so elu) and softplus in this form; its erf and gelu stay with
libm.
Coefficients were fitted in float64 by linearised least squares with Lawson reweighting towards
the minimax relative error (the fit errors are quoted); ``tests/test_vmath.py`` checks every bound
below over the whole float32 range, through the real kernels.

tanh (float32): tanh(x) = x P(x^2) / Q(x^2) for |x| <= 9, +-1 beyond (tanh(9) rounds to 1 in
float32). P (degree 5) and Q (degree 4, Q(0) = 1) fitted to tanh(x)/x on [1e-4, 9] (fit error
1.3e-9). Maximum error against float64 ``np.tanh``: under 8 ulp (measured 5.6 ulp).

sigmoid (float32): with u = e^-|x| (``exp`` below), sigma(x) = 1 / (1 + u) for x >= 0 and
u / (1 + u) for x < 0, so the result keeps exp's relative accuracy: under 4 ulp wherever it is a
normal float32 (softplus's derivative inherits it). silu = x u / (1 + u) for x < 0 scales
x (1 + e) / (1 + u) by 2^n once (``_exp_parts``), so it keeps the bound where sigma itself is
below the normal range (x < -87). An absolute-error form such as (1 + tanh(x / 2)) / 2 is off by
100% below x = -17, where sigma is under 4e-8; with Adam, whose step does not shrink with the
gradient, such a gradient becomes a full-size wrong step. silu on 128 x 256 float32: ~13% slower
than x * sigmoid(x) with the absolute-error sigmoid.

exp, expm1 (float32): x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2 (ln2 in two parts,
Cody and Waite, so r is exact); expm1(r) = r + r^2 E(r), E of degree 5 (fit error 2.4e-10
relative); exp(x) = 2^n (1 + expm1(r)) and, for n <= 24, expm1(x) = 2^n expm1(r) + (2^n - 1),
which has no cancellation. 2^n is built from its exponent bits (``_pow2``) as two factors, so
results down in the subnormals and up to overflow come out right. exp under 1.5 ulp (measured
0.97), expm1 under 2 (1.41). Against libm's scalar expf / expm1f: elu on 128 x 256 float32,
272 -> 18.5 us.

softplus (float32): max(x, 0) + log1p(u), u = e^-|x| in (0, 1]; log1p(u) = 2 atanh(s) with
s = u / (2 + u) in (0, 1/3], 2 atanh(s) = 2 s A(s^2), A of degree 4 (fit error 4e-9). Under
4 ulp (measured 3.5); 128 x 256: 391 -> 28 us.

erf (float32): x P(x^2) / Q(x^2) for |x| <= 3.92, +-1 beyond (erf rounds to 1 in float32 from
x = 3.9193). P and Q of degree 5, Q(0) = 1 (fit error 1.9e-8 relative, on [1e-4, 3.92]). Under
6 ulp (measured 5.2, near 1).

gelu = z Phi(z), Phi the standard normal CDF, and gelu' = Phi(z) + z phi(z) (float32). The erf
form (1 + erf(z / sqrt 2)) / 2 cancels below z = -1: 100% off from z = -5.5 in float32, ~2e-6
relative near z = -8 in float64. For |z| < 1, Phi(z) = 1/2 + z S(z^2), S of degree 5 (fit error
7e-10 relative). For a = |z| >= 1, Phi(-a) = e^(-a^2/2) K(a^2) / a, where
K(a^2) = a erfcx(a / sqrt 2) / 2 goes from 0.26 at a = 1 to 1 / sqrt(2 pi): P(h) / Q(h) in
h = a^2, P and Q of degree 5 (fit in 1 / h, relative error 4.2e-9 on [1, 15]; every coefficient
is positive, so neither sum cancels). e^(-a^2 / 2) must see a^2 exactly: rounding it costs a
relative error of a^2 2^-24 (1.3e-5 at a = 15), so the rounding error of h = a * a,
fma(a, a, -h), comes back as the factor 1 - err / 2. Then gelu = -e K below -1 and z - e K
above 1; gelu' = +-e (K - h / sqrt(2 pi)) / a (at most a 3x cancellation, at a = 1), or 1 minus
that. Under 8 ulp wherever gelu is a normal float32 (measured 5.9), gelu' likewise below z = -1
and within 2e-7 absolute everywhere (it crosses 0 at z = -0.75). Float64 takes
Phi = erfc(-z / sqrt 2) / 2 from libm: ~1e-13 relative down to the underflow.

float64: exp and expm1 take the same steps with float64's constants (``_EXP``) and the Taylor
series for E; against a long double exact value, exp under 1.5 ulp (measured 0.97), expm1 under 2
(1.79). tanh(|x|) = -e / (2 + e) with e = expm1(-2 |x|), the sign put back: no cancellation, under
4 ulp (measured 2.5); sigmoid under 4 (2.5); silu = x sigmoid(x), under 4 (3.2) while sigma is
normal (x > -708); softplus as float32's, A the series 1 / (2 k + 1) to k = 16, under 4 (2.9).
Against libm's scalar calls, 128 x 256 float64, one thread (Sapphire Rapids, noisy): tanh 24 ->
~3.2 ns per value (~0.9 in explicit vectors, ``tanh_vector_float64``), sigmoid 19 -> ~3, elu 20 ->
~3, softplus 12 -> 3.2.

These functions are compiled with ``ORDERED_OPTIONS`` (no reassociation): their accuracy depends
on the order in which they round.
"""

import math
from collections import namedtuple

import numpy as np

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from . import simd
from ._config import OPTIONS, ORDERED_OPTIONS, jit_inline


@jit_inline
def _horner(coeffs, s):
    """coeffs[0] + s (coeffs[1] + s (coeffs[2] + ...)), in the dtype of s (coeffs: a constant tuple;
    the loop unrolls, so each polynomial is a chain of fused multiply-adds)."""
    f = type(s)
    y = f(coeffs[len(coeffs) - 1])
    for i in range(len(coeffs) - 2, -1, -1):
        y = f(coeffs[i]) + s * y
    return y


def _odd_rational_float32(p_coeffs, q_coeffs, clamp):
    """x -> x P(x^2) / Q(x^2) for x clamped to [-clamp, clamp], bounded by +-1 (the rational
    overshoots 1 by an ulp near the clamp). The clamp is a float32 at which the rational reaches
    1, so every |x| >= clamp gives exactly +-1 by the bounds alone (tanh and erf both round to +-1
    in float32 there). NaN stays NaN: comparisons with it are false."""

    def odd_rational(x):
        f = type(x)
        hi = f(clamp)
        c = hi if x > hi else x
        c = -hi if c < -hi else c
        s = c * c
        t = c * _horner(p_coeffs, s) / _horner(q_coeffs, s)
        one = f(1.0)
        t = one if t > one else t
        return -one if t < -one else t

    return odd_rational


# The clamps: the float32 just above the end of each rational's fitted range, where it evaluates
# to 1 or more (9 itself gives 0.99999994 = tanh(9) rounded; 9.000001 gives 1.0000001). So no
# select of the sign past the clamp: 4 of tanh's ~22 vector operations (abs, compare, copysign,
# blend).
def _float32_above(x):
    return float(np.nextafter(np.float32(x), np.float32(np.inf)))


_TANH_P = (0.9999999987224111, 0.13680840735935618, 0.0038694883236449333, 2.8030914433323643e-05,
           3.064157510909311e-08, -1.2245541136350973e-11)
_TANH_Q = (1.0, 0.4701417282506175, 0.027250084601603622, 0.0003940678719133788, 1.289007403215704e-06)
_TANH_CLAMP = _float32_above(9.0)


def _overload_odd_rational(stub, libm, coeffs, options):
    """Register ``stub``'s kernel implementation: the odd rational approximation with ``coeffs`` =
    (P, Q, clamp) for float32, ``libm`` for float64 (None: float64 has an overload of its own)."""
    p_coeffs, q_coeffs, clamp = coeffs

    @overload(stub, jit_options=options)
    def _impl(x):
        if x == types.float32:
            return _odd_rational_float32(p_coeffs, q_coeffs, clamp)
        return None if libm is None else (lambda x: libm(x))


def tanh(x):
    """Hyperbolic tangent: the rational approximation for float32, from expm1 for float64 (in
    kernels)."""
    return math.tanh(x)


_overload_odd_rational(tanh, None, (_TANH_P, _TANH_Q, _TANH_CLAMP), OPTIONS)


# Inlined into the caller in Numba's IR: compiled on its own, with expm1 inside it, the function
# is too large for LLVM to inline into the activation loop, which then runs one call per value
# (float64, 128 x 256: 9.3 ns per value). Its own arithmetic does not depend on the order of its
# roundings; expm1's, which does, is compiled on its own with ORDERED_OPTIONS.
@overload(tanh, inline="always")
def _tanh_float64_overload(x):
    if x != types.float64:
        return None

    def tanh_float64(x):
        """tanh(|x|) = -e / (2 + e) with e = expm1(-2 |x|) in (-1, 0], the sign of x put back:
        no cancellation anywhere (2 + e is in [1, 2]), so the result keeps expm1's relative
        accuracy."""
        e = expm1(-2.0 * abs(x))
        return math.copysign(-e / (2.0 + e), x)

    return tanh_float64


@jit_inline
def _vhorner(coeffs, s, f):
    """``_horner`` on a vector s of f's lanes (f: np.float32 or np.float64): the same chain of fused
    multiply-adds, lane by lane."""
    y = simd.vsplat(f(coeffs[len(coeffs) - 1]))
    for i in range(len(coeffs) - 2, -1, -1):
        y = simd.vfma(s, y, simd.vsplat(f(coeffs[i])))
    return y


@jit_inline
def tanh_vector_float32(x):
    """float32 ``tanh`` of a vector of float32 lanes, bit for bit the scalar one: the same
    operations in the same order, lane by lane. Written out in vectors because the loop LLVM
    vectorises from the scalar form runs one vector at a time through the rational's chain of
    dependent operations: 0.43 -> 0.25 ns per value (float32, 4096 values, Zen 4)."""
    f = np.float32
    hi, lo = simd.vsplat(f(_TANH_CLAMP)), simd.vsplat(f(-_TANH_CLAMP))
    one, minus_one = simd.vsplat(f(1.0)), simd.vsplat(f(-1.0))
    c = simd.vselect_gt(x, hi, hi, x)
    c = simd.vselect_gt(lo, c, lo, c)
    s = simd.vmul(c, c)
    t = simd.vdiv(simd.vmul(c, _vhorner(_TANH_P, s, f)), _vhorner(_TANH_Q, s, f))
    t = simd.vselect_gt(t, one, one, t)
    return simd.vselect_gt(minus_one, t, minus_one, t)


def sigmoid(x):
    """Logistic function, from e^-|x| (in kernels)."""
    return 1.0 / (1.0 + math.exp(-x))


@overload(sigmoid, jit_options=ORDERED_OPTIONS)
def _sigmoid_overload(x):
    if x not in _EXP:
        return None

    def sigmoid_vectorisable(x):
        one = type(x)(1.0)
        u = exp(-abs(x))  # NaN stays NaN
        inverse = one / (one + u)
        return inverse if x >= type(x)(0.0) else u * inverse

    return sigmoid_vectorisable


# exp's constants per dtype (``_ExpConstants``):
# - The input is clamped to [lo, hi]: beyond it the result is 0 or inf, and n stays in a range
#   whose halves are exponents _pow2 can build.
# - ln2 = ln2_hi + ln2_lo, ln2_hi with few significant bits, so that n ln2_hi is exact.
# - rounder = 1.5 2^(p - 1): (v + rounder) - rounder is v rounded to an integer.
# - E: expm1(r) = r + r^2 E(r) on |r| <= ln2 / 2.
# - n_exact: up to this n, 2^n - 1 is exact (expm1's no-cancellation form).
_ExpConstants = namedtuple("_ExpConstants", "lo hi ln2_hi ln2_lo rounder coeffs n_exact")
_LOG2E = 1.4426950408889634
_EXP = {
    # float32: ln2_hi with 9 bits (|n| < 2^15); E of degree 5, fitted (see the module docstring).
    types.float32: _ExpConstants(-110.0, 89.0, 0.693359375, -2.1219444005469057e-04, 12582912.0,
                    (0.500000004413354, 0.16666666370630434, 0.04166636105282153, 0.00833338935632187,
                     0.0013940615575833753, 0.00019845867477125817), 24.0),
    # float64: ln2_hi with 32 bits (|n| < 2^21); E is the Taylor series 1 / (k + 2)! to degree 11,
    # whose truncation is r^13 / 14! relative = 1.2e-17, 0.1 ulp, at |r| = ln2 / 2.
    types.float64: _ExpConstants(-746.0, 710.0, 0.6931471803691238, 1.9082149292705877e-10, 6755399441055744.0,
                    tuple(1.0 / math.factorial(k) for k in range(2, 14)), 53.0),
}
# 2 atanh(s) = 2 s A(s^2) for s in (0, 1/3]: float32's A fitted (see the module docstring);
# float64's the series 1 / (2 k + 1) to k = 16, whose truncation is (1/9)^17 / 35 = 1.7e-18
# relative, 0.02 ulp.
_SOFTPLUS_A = {
    types.float32: (1.0000000039602026, 0.3333315735188565, 0.20012454582597375, 0.13980310348259423,
                    0.14089123085597063),
    types.float64: tuple(1.0 / (2 * k + 1) for k in range(17)),
}
_ERF_P = (1.1283791461354986, 0.1904042324357106, 0.05274849241973227, 0.003765538806414423,
          0.00028488407798886445, 2.050145579248988e-06)
_ERF_Q = (1.0, 0.5020740983788533, 0.11410824720995381, 0.014969057575605715, 0.0011625223468834192,
          3.809238864016625e-05)
_ERF_CLAMP = _float32_above(3.92)


@intrinsic
def _pow2(typingctx, n):
    """2^n in n's float type, for an n holding an integer of that type's normal exponent range
    ([-126, 127] for float32, [-1022, 1023] for float64): the biased exponent shifted into place.
    n may be a ``simd.Vector``: lane by lane. (No vectorisable libm equivalent exists in Numba.)"""
    scalar = n.dtype if isinstance(n, simd.Vector) else n
    if scalar not in (types.float32, types.float64):
        return None
    bits, bias, shift = (32, 127, 23) if scalar == types.float32 else (64, 1023, 52)

    def codegen(context, builder, signature, args):
        integer = ir.IntType(bits)
        if isinstance(n, simd.Vector):
            integer = ir.VectorType(integer, n.lanes)
            constant = lambda v: ir.Constant(integer, [ir.Constant(integer.element, v)] * n.lanes)
        else:
            constant = lambda v: ir.Constant(integer, v)
        k = builder.fptosi(args[0], integer)
        biased = builder.shl(builder.add(k, constant(bias)), constant(shift))
        return builder.bitcast(biased, args[0].type)

    return n(n), codegen


def _exp_parts(x):
    """(e, n, s1, s2) with x = n ln2 + r, e = expm1(r), 2^n = s1 s2 (x clamped to the dtype's
    [lo, hi] of ``_EXP``, NaN to lo: the callers return NaN for NaN themselves); jitted only."""
    raise NotImplementedError("jitted only")


@overload(_exp_parts, inline="always")
def _exp_parts_overload(x):
    if x not in _EXP:
        return None
    lo, hi, ln2_hi, ln2_lo, rounder, coeffs, _ = _EXP[x]

    def exp_parts(x):
        f = type(x)
        c = x if x > f(lo) else f(lo)
        c = c if c < f(hi) else f(hi)
        n = (c * f(_LOG2E) + f(rounder)) - f(rounder)
        r = (c - n * f(ln2_hi)) - n * f(ln2_lo)
        e = r + r * r * _horner(coeffs, r)
        h = (n * f(0.5) - f(0.25) + f(rounder)) - f(rounder)  # floor(n / 2)
        return e, n, _pow2(h), _pow2(n - h)

    return exp_parts


@jit_inline
def _times_pow2(p, s1, s2):
    """p 2^n with 2^n = s1 s2 from ``_exp_parts``: p s1 first, so a result in the subnormals is
    rounded once and one beyond the float32 range becomes inf."""
    return (p * s1) * s2


def exp(x):
    """e^x: the vectorisable form above (in kernels)."""
    return math.exp(x)


@overload(exp, jit_options=ORDERED_OPTIONS)
def _exp_overload(x):
    if x in _EXP:
        def exp_vectorisable(x):
            e, n, s1, s2 = _exp_parts(x)
            y = _times_pow2(type(x)(1.0) + e, s1, s2)
            return y if x == x else x

        return exp_vectorisable
    return None


def silu(x):
    """x sigma(x): for float32 from exp's parts, so that a sigma below the normal range (x < -87)
    does not cost x sigma(x) its precision; x * sigmoid(x) for float64 (in kernels)."""
    return x / (1.0 + math.exp(-x))


@overload(silu, jit_options=ORDERED_OPTIONS)
def _silu_overload(x):
    if x == types.float64:
        # x sigma(x): sigma is below the normal range only for x < -708. The form below, with
        # float64's longer exp inside it, is too large for LLVM to inline into the activation
        # loop (128 x 256: 13 ns per value, one call each, against ~2.5 this way).
        return lambda x: x * sigmoid(x)
    if x != types.float32:
        return None
    lo = _EXP[x].lo

    def silu_vectorisable(x):
        one = type(x)(1.0)
        e, n, s1, s2 = _exp_parts(-abs(x))  # e^-|x| = (1 + e) s1 s2
        u = _times_pow2(one + e, s1, s2)
        inverse = one / (one + u)
        if x >= type(x)(0.0) or x != x or x < type(x)(lo):  # beyond lo, u is 0
            return x * (inverse if x >= type(x)(0.0) else u * inverse)
        return _times_pow2(x * (one + e) * inverse, s1, s2)  # x u / (1 + u), rounded once

    return silu_vectorisable


def expm1(x):
    """e^x - 1, accurate near 0: the vectorisable form above (in kernels)."""
    return math.expm1(x)


@overload(expm1, jit_options=ORDERED_OPTIONS)
def _expm1_overload(x):
    if x not in _EXP:
        return None
    n_exact = _EXP[x].n_exact

    def expm1_vectorisable(x):
        f = type(x)
        e, n, s1, s2 = _exp_parts(x)
        t = s1 * s2  # 2^n, exact for the n <= n_exact where it is used
        y = t * e + (t - f(1.0)) if n <= f(n_exact) else _times_pow2(f(1.0) + e, s1, s2)
        return y if x == x else x

    return expm1_vectorisable


# Past 2 |x| = 38, e^(-2 |x|) is below half an ulp of 1, so expm1(-2 |x|) rounds to -1 and tanh(x)
# to +-1; clamping there keeps 2^n a normal number from one exponent.
_TANH_FLOAT64_CLAMP = -64.0


def _tanh_vector_float64_form():
    _, _, ln2_hi, ln2_lo, _, coeffs, _ = _EXP[types.float64]

    @jit_inline
    def tanh_vector_float64(x):
        """float64 ``tanh`` of a vector of float64 lanes: the scalar form (-e / (2 + e), e =
        expm1(-2 |x|)) with expm1's steps written in vectors, n by rounding instructions and the
        multiply-adds fused, so that no step depends on the caller's fastmath flags (the scalar
        exp's rounding trick, (v + 1.5 2^52) - 1.5 2^52, would fold to v under "reassoc"). Within
        the scalar form's 4 ulp, not always its bits. LLVM's vectorisation of the scalar form ran
        one 4-lane vector at a time through the chain: ~3 ns per value (Sapphire Rapids)."""
        f = np.float64
        one = simd.vsplat(f(1.0))
        a = simd.vabs(x)
        v = simd.vmul(a, simd.vsplat(f(-2.0)))
        lo = simd.vsplat(f(_TANH_FLOAT64_CLAMP))
        c = simd.vselect_gt(v, lo, v, lo)  # NaN becomes lo here and is put back at the end
        n = simd.vround(simd.vmul(c, simd.vsplat(f(_LOG2E))))
        minus_n = simd.vmul(n, simd.vsplat(f(-1.0)))
        r = simd.vfma(minus_n, simd.vsplat(f(ln2_hi)), c)  # exact
        r = simd.vfma(minus_n, simd.vsplat(f(ln2_lo)), r)
        e = simd.vfma(simd.vmul(r, r), _vhorner(coeffs, r, f), r)  # expm1(r)
        t = _pow2(n)
        em1 = simd.vfma(t, e, simd.vsub(t, one))  # expm1(c) = 2^n expm1(r) + (2^n - 1), in (-1, 0]
        q = simd.vdiv(em1, simd.vsub(simd.vsplat(f(-2.0)), em1))
        return simd.vselect_ge(a, a, simd.vcopysign(q, x), x)

    return tanh_vector_float64


tanh_vector_float64 = _tanh_vector_float64_form()


def softplus(x):
    """log(1 + e^x) without overflow, max(x, 0) + log1p(e^-|x|): the vectorisable form below (in
    kernels)."""
    y = max(x, 0.0) + math.log1p(math.exp(-abs(x)))
    return y if x == x else x


def _polynomial(coeffs):
    """t -> coeffs[0] + coeffs[1] t + ...: one Horner chain for up to 12 coefficients, else two
    joined by t^m. LLVM unrolls a Horner loop of 12 steps; one of 17 stayed a loop, which kept the
    activation loop around it scalar (float64 softplus, 128 x 256: 12 ns per value, 2.6 split)."""
    if len(coeffs) <= 12:
        return jit_inline(lambda t: _horner(coeffs, t))
    m = (len(coeffs) + 1) // 2
    low, high = coeffs[:m], coeffs[m:]

    def split_horner(t):
        t_m = t
        for _ in range(m - 1):
            t_m *= t
        return _horner(low, t) + t_m * _horner(high, t)

    return jit_inline(split_horner)


def _softplus_form(coeffs):
    """max(x, 0) + log1p(u), u = e^-|x|, log1p(u) = 2 s A(s^2), s = u / (2 + u)."""
    polynomial = _polynomial(coeffs)

    def softplus_vectorisable(x):
        f = type(x)
        u = exp(-abs(x))
        s = u / (f(2.0) + u)
        log1p_u = f(2.0) * s * polynomial(s * s)
        y = (x if x > f(0.0) else f(0.0)) + log1p_u
        return y if x == x else x

    return softplus_vectorisable


@overload(softplus, jit_options=ORDERED_OPTIONS)
def _softplus_float32_overload(x):
    return _softplus_form(_SOFTPLUS_A[x]) if x == types.float32 else None


# float64: inlined into the caller in Numba's IR, as tanh's (compiled on its own, with float64's
# exp inside it, the function is too large for LLVM to inline into the activation loop: 12 ns
# per value, one call each). Its own steps do not depend on the order of their roundings; exp's,
# which do, is compiled on its own with ORDERED_OPTIONS.
@overload(softplus, inline="always")
def _softplus_float64_overload(x):
    return _softplus_form(_SOFTPLUS_A[x]) if x == types.float64 else None


def erf(x):
    """The error function: the rational approximation above for float32, libm for float64."""
    return math.erf(x)


_overload_odd_rational(erf, math.erf, (_ERF_P, _ERF_Q, _ERF_CLAMP), ORDERED_OPTIONS)


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c with one rounding (the FMA instruction; LLVM vectorises it in loops)."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, signature, args):
        f32 = ir.FloatType()
        fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
        return builder.call(fma, args)

    return types.float32(a, b, c), codegen


_SQRT1_2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
# Phi(z) = 1/2 + z S(z^2) on |z| <= 1, ascending coefficients in z^2 (see the module docstring).
_GELU_MID_S = (0.39894228012009986, -0.06649036004921698, 0.009973324409325132, -0.001186332719935887,
               0.0001134895271838153, -7.655464068535844e-06)
# K(h) = P(h) / Q(h), h = a^2, for a >= 1, ascending coefficients.
_GELU_TAIL_P = (1.4531804862009667, 29.83311584255415, 68.7290779441465, 40.73856987979597,
                7.5973059385720525, 0.3989422796748266)
_GELU_TAIL_Q = (21.843012841259917, 160.337113322598, 246.27990755344632, 119.1604766945443,
                20.043619522027136, 1.0)
# Beyond |z| = _GELU_TAIL_END, e^(-z^2/2) is under float32's smallest subnormal: a is clamped there.
_GELU_TAIL_END = 15.0


@jit_inline
def _gelu_parts(z):
    """(a, h, e, K) for float32 z: a = |z| clamped to _GELU_TAIL_END, h = a * a, e = e^(-a^2/2)
    with a^2's rounding error put back (to first order), K = K(h), which is a's tail ratio
    a e^(a^2/2) Phi(-a) where a >= 1 (elsewhere finite and unused)."""
    f = type(z)
    a = abs(z)
    a = a if a < f(_GELU_TAIL_END) else f(_GELU_TAIL_END)
    h = a * a
    err = _fma(a, a, -h)  # a^2 = h + err exactly
    e = exp(f(-0.5) * h) * (f(1.0) - f(0.5) * err)
    return a, h, e, _horner(_GELU_TAIL_P, h) / _horner(_GELU_TAIL_Q, h)


@jit_inline
def _normal_cdf_libm(z):
    """Phi(z) from libm's erfc: relative-accurate where Phi is tiny (1 + erf cancels there)."""
    return 0.5 * math.erfc(-z * _SQRT1_2)


def _gelu_libm(z):
    return z * _normal_cdf_libm(z)


def _gelu_derivative_libm(z):
    return _normal_cdf_libm(z) + z * (_INV_SQRT_2PI * math.exp(-0.5 * z * z))


@jit_inline
def _by_range(z, below, middle, above):
    """The float32 gelu forms by range: ``below`` for z <= -1 (NaN at z = -inf, as z Phi(z) =
    -inf * 0 is in the reference), ``above`` for z >= 1, ``middle`` otherwise (NaN included)."""
    f = type(z)
    if z <= f(-1.0):
        return below if z > f(-math.inf) else z * f(0.0)
    return above if z >= f(1.0) else middle


def gelu(z):
    """z Phi(z): the float32 form above, libm's erfc for float64 (in kernels)."""
    return _gelu_libm(z)


def gelu_derivative(z):
    """Phi(z) + z phi(z), phi(z) = e^(-z^2/2) / sqrt(2 pi), to gelu's relative accuracy."""
    return _gelu_derivative_libm(z)


# gelu and its derivative are inlined into their callers (in Numba's IR): compiled on their own,
# they are too large for LLVM to inline into a loop, which then runs scalar, one call per value
# (128 x 256 float32: ~20 ns per value against ~4). Inlined, they take the caller's fastmath
# flags; their order-sensitive part (exp's range reduction) is the ORDERED_OPTIONS overload they
# call, and the fma that recovers a^2's rounding error is an intrinsic, which no flag rewrites.
@overload(gelu, inline="always")
def _gelu_overload(z):
    if z == types.float32:
        def gelu_float32(z):
            f = type(z)
            a, h, e, K = _gelu_parts(z)
            tail = e * K  # a Phi(-a)
            return _by_range(z, -tail, z * (f(0.5) + z * _horner(_GELU_MID_S, z * z)), z - tail)

        return gelu_float32
    return _gelu_libm


@overload(gelu_derivative, inline="always")
def _gelu_derivative_overload(z):
    if z == types.float32:
        def gelu_derivative_float32(z):
            f = type(z)
            a, h, e, K = _gelu_parts(z)
            tail = e * (K - f(_INV_SQRT_2PI) * h) / a  # Phi(-a) - a phi(a)
            middle = f(0.5) + z * _horner(_GELU_MID_S, z * z) + z * (f(_INV_SQRT_2PI) * e)
            return _by_range(z, tail, middle, f(1.0) - tail)

        return gelu_derivative_float32
    return _gelu_derivative_libm
