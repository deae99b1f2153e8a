"""Accuracy of the vectorisable activations against float64 NumPy over the whole float32 range.

The activations run through the real kernels (``bias_activate_into`` and ``bias_activate_inplace``),
so the fastmath flags and vectorisation that the product uses are the ones measured.
"""

import numpy as np
import pytest

from kernels import activations as kact


def _float32_sweep():
    """Every 251st non-negative float32 bit pattern (zero, subnormals, normals, inf), both signs."""
    bits = np.arange(0, 0x7F800001, 251, dtype=np.uint32)
    bits = np.append(bits, np.uint32(0x7F800000))  # +inf
    positive = bits.view(np.float32)
    return np.concatenate([positive, -positive])


def _run(code, z):
    z2 = np.ascontiguousarray(z.reshape(1, -1))
    out = np.empty_like(z2)
    kact.bias_activate_into(code, z2.copy(), np.zeros(z2.shape[1], z2.dtype), out)
    inplace = z2.copy()
    kact.bias_activate_inplace(code, inplace, np.zeros(z2.shape[1], z2.dtype))
    np.testing.assert_array_equal(inplace, out)
    return out[0]


def _ulp_error(got, exact):
    """|got - exact| in units of the float32 spacing at exact."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return np.abs(got.astype(np.float64) - exact) / spacing


def _sigmoid64(z):
    return np.where(z >= 0, 1 / (1 + np.exp(-np.abs(z))), np.exp(-np.abs(z)) / (1 + np.exp(-np.abs(z))))


def test_float32_tanh_is_within_8_ulp_everywhere():
    z = _float32_sweep()
    got = _run(kact.TANH, z)
    exact = np.tanh(z.astype(np.float64))
    err = _ulp_error(got, exact)
    assert err.max() < 8, f"max error {err.max():.2f} ulp at x = {z[err.argmax()]!r}"
    assert np.all(np.abs(got) <= 1)
    assert np.array_equal(np.sign(got), np.sign(z))


def test_float32_sigmoid_absolute_error_below_3e_7():
    z = _float32_sweep()
    got = _run(kact.SIGMOID, z)
    err = np.abs(got.astype(np.float64) - _sigmoid64(z.astype(np.float64)))
    assert err.max() < 3e-7, f"max error {err.max():.3g} at x = {z[err.argmax()]!r}"
    assert np.all((got >= 0) & (got <= 1))


@pytest.mark.parametrize("code,exact", [(kact.TANH, np.tanh), (kact.SIGMOID, _sigmoid64)], ids=["tanh", "sigmoid"])
def test_float64_keeps_libm_accuracy(code, exact):
    z = np.concatenate([np.linspace(-40, 40, 100_001), np.geomspace(1e-300, 1e3, 10_001)])
    z = np.concatenate([z, -z])
    got = _run(code, z)
    want = exact(z)
    np.testing.assert_allclose(got, want, rtol=6e-16, atol=1e-300)  # libm vs NumPy: 1-2 ulp


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", [kact.TANH, kact.SIGMOID], ids=["tanh", "sigmoid"])
def test_nan_and_infinities(code, dtype):
    z = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0], dtype=dtype)
    got = _run(code, z)
    assert np.isnan(got[0])
    expected = [1.0, -1.0, 0.0, 0.0] if code == kact.TANH else [1.0, 0.0, 0.5, 0.5]
    np.testing.assert_array_equal(got[1:], expected)
