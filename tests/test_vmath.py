"""Accuracy of the vectorisable activations against float64 NumPy over the whole float32 range.

The activations run through the real kernel (``bias_activate_inplace``), so the fastmath flags and
vectorisation that the product uses are the ones measured. The exact
values are ``fastnn.reference``'s activations evaluated in float64.
"""

import numba
import numpy as np
import pytest
from scipy.special import erf as erf64
from scipy.special import ndtr

from fastnn.reference import _ACTIVATIONS
from fastnn._kernels import _config, vmath
from fastnn._kernels import activations as kact


def _exact(name, z, derivative=False):
    """The reference activation ``name`` (or its derivative) in float64."""
    with np.errstate(over="ignore", invalid="ignore"):
        return _ACTIVATIONS[name][int(derivative)](np.asarray(z, dtype=np.float64))


def _float32_sweep():
    """Every 251st non-negative float32 bit pattern (zero, subnormals, normals, inf), both signs."""
    bits = np.arange(0, 0x7F800001, 251, dtype=np.uint32)
    bits = np.append(bits, np.uint32(0x7F800000))  # +inf
    positive = bits.view(np.float32)
    return np.concatenate([positive, -positive])


def _run(code, z):
    out = np.array(z.reshape(1, -1))  # a C-contiguous copy
    kact.ensure_forms([code], out.dtype)
    kact.bias_activate_inplace(code, out, np.zeros(out.shape[1], out.dtype))
    return out[0]


def _derivative(code, z, a):
    d = np.ones((1, z.size), z.dtype)
    kact.ensure_forms([code], z.dtype)
    kact.chain_derivative_inplace(code, z.reshape(1, -1).copy(), a.reshape(1, -1).copy(), d)
    return d[0]


def _ulp_error(got, exact):
    """|got - exact| in units of the float32 spacing at exact; 0 where both are the same infinity,
    inf where only the exact value rounds to infinity (float32 overflow)."""
    big = float(np.finfo(np.float32).max)
    with np.errstate(over="ignore", invalid="ignore"):
        spacing = np.spacing(np.minimum(np.abs(exact), big).astype(np.float32)).astype(np.float64)
        err = np.abs(got.astype(np.float64) - exact) / spacing
        rounds_to_inf = np.isinf(got) & (exact.astype(np.float32) == got)
    err[rounds_to_inf] = 0.0
    return err


def _normal_float32(exact):
    """Where the exact value is a finite, normal float32 (below that, float32 keeps fewer bits and
    an absolute bound of the smallest normal applies)."""
    return np.isfinite(exact) & (np.abs(exact) >= float(np.finfo(np.float32).tiny))


@numba.njit(**_config.OPTIONS)
def _elementwise(which, x, out):
    """One vmath function over an array, compiled with the kernels' options, as kernels call them."""
    for i in range(x.size):
        if which == 0:
            out[i] = vmath.exp(x[i])
        elif which == 1:
            out[i] = vmath.expm1(x[i])
        elif which == 2:
            out[i] = vmath.softplus(x[i])
        elif which == 4:
            out[i] = vmath.tanh(x[i])
        else:
            out[i] = vmath.erf(x[i])


_FUNCTIONS = {"exp": (0, np.exp), "expm1": (1, np.expm1), "softplus": (2, lambda z: _exact("softplus", z)),
              "erf": (3, erf64)}


def _vmath(name, z):
    out = np.empty_like(z)
    _elementwise(_FUNCTIONS[name][0], z, out)
    return out


@pytest.mark.parametrize("name,code,clamp", [("tanh", 4, vmath._TANH_CLAMP), ("erf", 3, vmath._ERF_CLAMP)])
def test_float32_odd_rationals_are_exactly_one_from_their_clamp_on(name, code, clamp):
    """tanh and erf saturate by their bounds alone: at the clamp the rational reaches 1, so from
    there on (infinity included) the result is exactly +-1, in the scalar form and, for tanh, in
    the activation kernel's vectors; just below the clamp it is the rational's own value."""
    c = np.float32(clamp)
    z = np.array([c, np.nextafter(c, np.float32(100)), c * 1.5, 1e30, np.inf], np.float32)
    z = np.concatenate([z, -z])
    got = np.empty_like(z)
    _elementwise(code, z, got)
    np.testing.assert_array_equal(got, np.sign(z))
    below = np.empty(1, np.float32)
    _elementwise(code, np.array([np.nextafter(c, np.float32(0))]), below)
    assert 0.9999 < below[0] <= 1
    if name == "tanh":
        rows = np.tile(z, (2, 2))
        kact.ensure_forms([kact.TANH], rows.dtype)
        kact.bias_activate_inplace(kact.TANH, rows, np.zeros(rows.shape[1], np.float32))
        np.testing.assert_array_equal(rows, np.sign(np.tile(z, (2, 2))))


def test_float32_tanh_is_within_8_ulp_everywhere():
    z = _float32_sweep()
    got = _run(kact.TANH, z)
    exact = _exact("tanh", z)
    err = _ulp_error(got, exact)
    assert err.max() < 8, f"max error {err.max():.2f} ulp at x = {z[err.argmax()]!r}"
    assert np.all(np.abs(got) <= 1)
    assert np.array_equal(np.sign(got), np.sign(z))


@pytest.mark.parametrize("name,code", [("sigmoid", kact.SIGMOID), ("silu", kact.SILU)])
def test_float32_sigmoid_and_silu_within_4_ulp_everywhere(name, code):
    """A relative bound over the whole range, the far negative tail included, where the values
    are tiny (sigmoid(-20) = 2.1e-9) and an absolute-error form would give 0."""
    z = _float32_sweep()
    got = _run(code, z)
    exact = _exact(name, z)
    # Below the normal range an optimizer's eps dwarfs such gradients: an absolute bound there.
    tiny = float(np.finfo(np.float32).tiny)
    normal = _normal_float32(exact)
    err = _ulp_error(got[normal], exact[normal])
    assert err.max() < 4, f"{name}: max error {err.max():.2f} ulp at x = {z[normal][err.argmax()]!r}"
    assert np.abs(got[~normal & np.isfinite(exact)] - exact[~normal & np.isfinite(exact)]).max() < tiny
    if name == "sigmoid":
        assert np.all((got >= 0) & (got <= 1))


def test_float32_sigmoid_gradients_keep_their_relative_accuracy():
    """softplus' = sigma and sigmoid' = sigma (1 - sigma), through the real derivative kernel, on
    the negative side where they are tiny: within a few ulp, not a fixed absolute error."""
    z = -np.geomspace(1e-3, 87.0, 20_001).astype(np.float32)
    a = _run(kact.SOFTPLUS, z)
    err = _ulp_error(_derivative(kact.SOFTPLUS, z, a), _exact("softplus", z, derivative=True))
    assert err.max() < 4, f"softplus': max error {err.max():.2f} ulp at z = {z[err.argmax()]!r}"
    a = _run(kact.SIGMOID, z)
    err = _ulp_error(_derivative(kact.SIGMOID, z, a), _exact("sigmoid", z, derivative=True))
    assert err.max() < 6, f"sigmoid': max error {err.max():.2f} ulp at z = {z[err.argmax()]!r}"


def _float64_sweep():
    z = np.concatenate([np.linspace(-40, 40, 100_001), np.geomspace(1e-300, 1e3, 10_001)])
    return np.concatenate([z, -z])


def _exact_long(name, z):
    """``name`` at float64 z in long double (x86's 64-bit significand: 11 bits beyond float64's)."""
    z = z.astype(np.longdouble)
    with np.errstate(over="ignore", invalid="ignore"):
        return {"exp": np.exp, "expm1": np.expm1, "tanh": np.tanh,
                "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "silu": lambda z: z / (1 + np.exp(-z)),
                "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0))),
                "softplus": lambda z: np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))}[name](z)


def _ulp_error64(got, exact):
    """|got - exact| in units of the float64 spacing at exact, where exact is a normal float64."""
    with np.errstate(over="ignore"):
        exact64 = exact.astype(np.float64)
    normal = np.isfinite(exact64) & (np.abs(exact64) >= np.finfo(np.float64).tiny)
    err = np.abs(got[normal].astype(np.longdouble) - exact[normal]) / np.spacing(np.abs(exact64[normal]))
    return err.astype(np.float64), normal


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63, reason="needs x86's 80-bit long double as the exact value")
@pytest.mark.parametrize("name,code,bound", [("tanh", kact.TANH, 4), ("sigmoid", kact.SIGMOID, 4),
                                             ("silu", kact.SILU, 4), ("elu", kact.ELU, 3),
                                             ("softplus", kact.SOFTPLUS, 4)])
def test_float64_activations_within_bound(name, code, bound):
    """The float64 activations from the vectorisable exp (under 4 ulp, against a long double
    exact value), down to where the result leaves the normal range; silu only where sigma is
    normal (x > -708: x sigma(x) with a subnormal sigma keeps fewer bits)."""
    z = _float64_sweep()
    if name == "silu":
        z = z[z > -708]
    err, normal = _ulp_error64(_run(code, z), _exact_long(name, z))
    assert err.max() < bound, f"{name}: max error {err.max():.2f} ulp at z = {z[normal][err.argmax()]!r}"


@pytest.mark.skipif(np.finfo(np.longdouble).nmant < 63, reason="needs x86's 80-bit long double as the exact value")
@pytest.mark.parametrize("name,bound", [("exp", 1.5), ("expm1", 2)])
def test_float64_exp_and_expm1_within_bound(name, bound):
    """Over the whole float64 range: overflow to inf, underflow through the subnormals to 0 (and
    -1 for expm1), NaN kept."""
    z = np.concatenate([_float64_sweep(), np.linspace(-760, 720, 200_001), [np.inf, -np.inf, np.nan]])
    got = _vmath(name, z)
    exact = _exact_long(name, z)
    err, normal = _ulp_error64(got, exact)
    assert err.max() < bound, f"{name}: max error {err.max():.2f} ulp at x = {z[normal][err.argmax()]!r}"
    below = ~normal & np.isfinite(z) & (z < 0)
    np.testing.assert_allclose(got[below], exact[below].astype(np.float64), rtol=0, atol=5e-324)
    assert np.all(got[np.isfinite(z) & (z > 709.8)] == np.inf)
    assert got[-3] == np.inf and got[-2] == (0.0 if name == "exp" else -1.0) and np.isnan(got[-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", [kact.TANH, kact.SIGMOID], ids=["tanh", "sigmoid"])
def test_nan_and_infinities(code, dtype):
    z = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=dtype)
    got = _run(code, z)
    assert np.isnan(got[0])
    expected = [1.0, -1.0, 0.0, 0.0] if code == kact.TANH else [1.0, 0.0, 0.5, 0.5]
    np.testing.assert_array_equal(got[1:], expected)


@pytest.mark.parametrize("shape", [(1, 7), (3, 37), (2, 64), (5, 16)])
def test_float32_tanh_rows_in_vectors_give_the_scalar_bits(shape):
    """The activation kernel takes float32 tanh a vector at a time (two at once, then one, then
    scalars for the tail): every entry, wherever it sits in a row, has the bits of the scalar
    vmath.tanh of z + b, saturation, NaN and signed zeros included."""
    rng = np.random.default_rng(0)
    z = (rng.normal(size=shape) * 6).astype(np.float32)
    specials = np.array([np.nan, 9.0, -9.0, 0.0, -0.0, 1e-30, 20.0, -8.99], np.float32)
    z.flat[: min(z.size, specials.size)] = specials[: z.size]
    b = (rng.normal(size=shape[1]) * 0.1).astype(np.float32)
    b[0] = 0.0
    got = z.copy()
    kact.ensure_forms([kact.TANH], got.dtype)
    kact.bias_activate_inplace(kact.TANH, got, b)
    expected = np.empty(z.size, np.float32)
    _elementwise(4, (z + b).ravel(), expected)  # the scalar vmath.tanh
    expected = expected.reshape(shape)
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("shape", [(3, 16), (2, 7), (5, 33), (1, 64)])
def test_float64_tanh_rows_in_vectors(shape):
    """float64 tanh takes whole vectors (rows of whole vectors with the bias on the way, other
    rows as one flat run): within 4 ulp of the exact value at every place, saturation to +-1,
    NaN kept, zeros and infinities."""
    rng = np.random.default_rng(1)
    z = rng.normal(size=shape) * 8
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-300, 19.1, -40.0, 700.0, -0.3])
    z.flat[: min(z.size, specials.size)] = specials[: z.size]
    b = np.zeros(shape[1])
    got = z.copy()
    kact.ensure_forms([kact.TANH], got.dtype)
    kact.bias_activate_inplace(kact.TANH, got, b)
    nan = np.isnan(z)
    assert np.array_equal(np.isnan(got), nan)
    nonzero = ~nan & (z != 0)  # z + b turns -0 into +0, and "nsz" leaves zeros' signs free
    assert np.array_equal(np.signbit(got[nonzero]), np.signbit(z[nonzero])) and np.all(got[z == 0] == 0)
    err, normal = _ulp_error64(got[~nan], _exact_long("tanh", z[~nan]))
    assert normal.all() or not np.any(z[~nan][~normal])
    assert err.max() < 4, f"max error {err.max():.2f} ulp at z = {z[~nan][normal][err.argmax()]!r}"
    got_b = z.copy()
    kact.bias_activate_inplace(kact.TANH, got_b, np.full(shape[1], 0.5))
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(got_b, np.tanh(z + 0.5), rtol=4e-16, atol=0)


@pytest.mark.parametrize("name,bound", [("exp", 1.5), ("expm1", 2), ("softplus", 4), ("erf", 6)])
def test_float32_exp_family_within_bound_everywhere(name, bound):
    """exp and expm1 over/underflow where float32 does (inf, subnormals, 0 and -1) and stay within
    the ulp bounds stated in kernels/vmath.py."""
    z = _float32_sweep()
    got = _vmath(name, z)
    with np.errstate(over="ignore"):
        exact = _FUNCTIONS[name][1](z.astype(np.float64))
    err = _ulp_error(got, exact)
    assert err.max() < bound, f"{name}: max error {err.max():.2f} ulp at x = {z[err.argmax()]!r}"


def test_float32_elu_and_softplus_activations_within_bound():
    z = _float32_sweep()
    for code, name, bound in ((kact.ELU, "elu", 2), (kact.SOFTPLUS, "softplus", 4)):
        err = _ulp_error(_run(code, z), _exact(name, z))
        assert err.max() < bound, f"{name}: max error {err.max():.2f} ulp at z = {z[err.argmax()]!r}"


def test_float32_gelu_within_8_ulp_everywhere():
    """gelu = z Phi(z) relative to 8 ulp over the whole range, the lower tail included, where
    the erf form's 1 + erf cancels (gelu(-6) = -5.9e-9 came out 0)."""
    z = _float32_sweep()
    z64 = z.astype(np.float64)
    got = _run(kact.GELU, z)
    with np.errstate(invalid="ignore"):
        exact = z64 * ndtr(z64)  # the erf form cancels in float64 too, far out: ndtr does not
    normal = _normal_float32(exact)
    err = _ulp_error(got[normal], exact[normal])
    assert err.max() < 8, f"max error {err.max():.2f} ulp at z = {z[normal][err.argmax()]!r}"
    below = np.isfinite(exact) & ~normal
    assert np.abs(got[below] - exact[below]).max() < float(np.finfo(np.float32).tiny)
    assert got[z == np.inf] == np.inf
    assert np.isnan(got[z == -np.inf]).all()  # z Phi(z) = -inf * 0, as in the reference


def test_float32_gelu_derivative_within_bounds():
    """gelu' = Phi(z) + z phi(z): absolute error under 4e-7 everywhere (it crosses 0 at
    z = -0.7518, where no relative bound can hold), and relative to 8 ulp below z = -1, where it
    tends to 0 and an absolute error alone would allow 100%."""
    z = _float32_sweep()
    z = z[np.isfinite(z)]
    got = _derivative(kact.GELU, z, _run(kact.GELU, z))
    exact = _exact("gelu", z, derivative=True)
    err = np.abs(got - exact)
    assert err.max() < 4e-7, f"max error {err.max():.3g} at z = {z[err.argmax()]!r}"
    tail = (z < -1) & _normal_float32(exact)
    ulps = _ulp_error(got[tail], exact[tail])
    assert ulps.max() < 8, f"max error {ulps.max():.2f} ulp at z = {z[tail][ulps.argmax()]!r}"


def test_float32_elu_derivative_keeps_its_relative_accuracy():
    """elu' = alpha e^z for z <= 0, from z: computed as a + alpha it cancels to 0 where e^z is
    below float32's spacing at 1 (z < -17)."""
    z = -np.geomspace(1e-3, 87.0, 20_001).astype(np.float32)
    err = _ulp_error(_derivative(kact.ELU, z, _run(kact.ELU, z)), _exact("elu", z, derivative=True))
    assert err.max() < 2, f"elu': max error {err.max():.2f} ulp at z = {z[err.argmax()]!r}"


def test_float64_gelu_is_relative_accurate_in_the_lower_tail():
    """Phi from erfc: gelu and gelu' to ~1e-13 relative down to where they underflow (the erf
    form was ~2e-6 off near z = -8 and 100% off below z = -8.3)."""
    z = -np.geomspace(1.0, 37.0, 50_001)
    exact = z * ndtr(z)
    np.testing.assert_allclose(_run(kact.GELU, z), exact, rtol=1e-12, atol=0)
    phi = np.exp(-z * z / 2) / np.sqrt(2 * np.pi)
    np.testing.assert_allclose(_derivative(kact.GELU, z, exact), ndtr(z) + z * phi, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", sorted(_FUNCTIONS))
def test_exp_family_special_values(name):
    z = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=np.float32)
    got = _vmath(name, z)
    assert np.isnan(got[0])
    expected = {"exp": [np.inf, 0, 1, 1], "expm1": [np.inf, -1, 0, 0], "softplus": [np.inf, 0, np.log(2), np.log(2)],
                "erf": [1, -1, 0, 0]}[name]
    np.testing.assert_allclose(got[1:], expected, rtol=6e-8, atol=0)


@pytest.mark.parametrize("code,name", [(kact.ELU, "elu"), (kact.SOFTPLUS, "softplus"), (kact.GELU, "gelu")])
def test_float64_exp_family_keeps_libm_accuracy(code, name):
    z = _float64_sweep()
    # gelu: libm's erf and SciPy's differ by an ulp near -1, which 1 + erf turns into ~|z| 1e-16.
    atol = 1e-15 if name == "gelu" else 1e-300
    np.testing.assert_allclose(_run(code, z), _exact(name, z), rtol=1e-15, atol=atol)
