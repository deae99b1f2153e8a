"""Gradients: fastnn.grad against fastnn.reference.grad and both against central finite differences.

Every activation x loss x dtype. The activation is applied on the hidden and the output layer so
that its derivative is exercised at both places.
"""

import numpy as np
import pytest

import fastnn as fnn
import fastnn.reference as ref
from conftest import DTYPES, LOSS_CASES, TOL, assert_tree_close, assert_tree_dtype, make_targets

SIZES = (3, 5, 4)
BATCH = 6


def _case(activation, kind, dtype, seed=0):
    rng = np.random.default_rng(seed)
    net = fnn.Net(sizes=SIZES, activations=(activation, activation))
    params = fnn.init(net, seed=seed, dtype=dtype)
    # Non-zero biases so every activation sees both signs away from its kinks.
    params = tuple((W, (rng.normal(size=b.shape) * 0.3).astype(dtype)) for W, b in params)
    x = rng.normal(size=(BATCH, SIZES[0]))
    y = make_targets(kind, BATCH, SIZES[-1], rng)
    return net, params, x, y


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("loss,kind", LOSS_CASES, ids=[f"{l}-{k}" for l, k in LOSS_CASES])
@pytest.mark.parametrize("activation", fnn.ACTIVATIONS)
def test_grad_matches_reference(activation, loss, kind, dtype):
    net, params, x, y = _case(activation, kind, dtype)
    value, grads = fnn.grad(net, params, x, y, loss=loss)
    ref_value, ref_grads = ref.grad(net, params, x, y, loss=loss)
    assert isinstance(value, float)
    np.testing.assert_allclose(value, ref_value, **TOL[np.dtype(dtype)])
    assert_tree_dtype(grads, dtype)
    assert_tree_close(grads, ref_grads, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("loss,kind", LOSS_CASES, ids=[f"{l}-{k}" for l, k in LOSS_CASES])
def test_grad_in_row_blocks_matches_reference(small_blocks, loss, kind, dtype):
    """A batch of 6 in blocks of 4 and 2: each block's share of the mean loss and gradient adds up."""
    net, params, x, y = _case("tanh", kind, dtype, seed=6)
    value, grads = fnn.grad(net, params, x, y, loss=loss)
    ref_value, ref_grads = ref.grad(net, params, x, y, loss=loss)
    np.testing.assert_allclose(value, ref_value, **TOL[np.dtype(dtype)])
    assert_tree_close(grads, ref_grads, dtype)
    grads_dy, dx = fnn.backward(net, params, x, np.ones((BATCH, SIZES[-1])))
    ref_grads_dy, ref_dx = ref.backward(net, params, x, np.ones((BATCH, SIZES[-1])))
    assert_tree_close(grads_dy, ref_grads_dy, dtype)
    np.testing.assert_allclose(dx, ref_dx, **TOL[np.dtype(dtype)])


def test_grad_of_a_batch_larger_than_a_block_matches_reference():
    """The real block size: 600 rows go through in blocks of 192, 192, 192 and 24."""
    rng = np.random.default_rng(8)
    net = fnn.Net(sizes=SIZES, activations=("relu", "identity"))
    params = fnn.init(net, seed=8, dtype=np.float64)
    x = rng.normal(size=(600, SIZES[0]))
    y = make_targets("labels", 600, SIZES[-1], rng)
    value, grads = fnn.grad(net, params, x, y, loss="softmax_cross_entropy")
    ref_value, ref_grads = ref.grad(net, params, x, y, loss="softmax_cross_entropy")
    np.testing.assert_allclose(value, ref_value, **TOL[np.dtype(np.float64)])
    assert_tree_close(grads, ref_grads, np.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_input_gradients_of_small_and_large_weight_matrices_match_reference(dtype):
    """dz W^T goes through a transposed copy of W up to TRANSPOSE_MAX_SIZE elements and through
    BLAS's transposed product above: here W2 (100 x 90) takes the second path, W1 the first."""
    from fastnn._kernels.network import TRANSPOSE_MAX_SIZE

    net = fnn.Net(sizes=(3, 100, 90), activations=("tanh", "identity"))
    assert net.sizes[0] * net.sizes[1] <= TRANSPOSE_MAX_SIZE < net.sizes[1] * net.sizes[2]
    rng = np.random.default_rng(9)
    params = fnn.init(net, seed=9, dtype=dtype)
    x = rng.normal(size=(BATCH, 3))
    dy = rng.normal(size=(BATCH, 90))
    grads, dx = fnn.backward(net, params, x, dy)
    ref_grads, ref_dx = ref.backward(net, params, x, dy)
    assert_tree_close(grads, ref_grads, dtype)
    np.testing.assert_allclose(dx, ref_dx, **TOL[np.dtype(dtype)])


def test_nets_with_a_large_weight_matrix_take_larger_blocks():
    """Blocks re-read every weight matrix: past LARGE_WEIGHT_BYTES, blocks of BLOCK_ROWS_LARGE rows."""
    from fastnn._buffers import BLOCK_ROWS, BLOCK_ROWS_LARGE, LARGE_WEIGHT_BYTES, block_rows

    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    small, large = fnn.mlp([64, 64, 10]), fnn.mlp([16, 512, 600, 1])  # largest W 16 KiB / 1.2 MB
    assert 64 * 64 * 8 < LARGE_WEIGHT_BYTES <= 512 * 600 * 4
    assert block_rows(small, 10_000, f64) == BLOCK_ROWS < BLOCK_ROWS_LARGE
    assert block_rows(large, 10_000, f32) == BLOCK_ROWS_LARGE
    assert block_rows(large, 300, f32) == 300 and block_rows(small, 5, f32) == 5


def _finite_difference(loss_of, params, h=1e-6):
    """Central differences of loss_of(params) for every parameter (float64)."""
    out = []
    for l, pair in enumerate(params):
        fd_pair = []
        for i, arr in enumerate(pair):
            fd = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                for sign in (1, -1):
                    bumped = arr.copy()
                    bumped[idx] += sign * h
                    trial = list(map(list, params))
                    trial[l][i] = bumped
                    fd[idx] += sign * loss_of(tuple(map(tuple, trial))) / (2 * h)
            fd_pair.append(fd)
        out.append(tuple(fd_pair))
    return tuple(out)


@pytest.mark.parametrize("loss,kind", LOSS_CASES, ids=[f"{l}-{k}" for l, k in LOSS_CASES])
@pytest.mark.parametrize("activation", fnn.ACTIVATIONS)
@pytest.mark.parametrize("impl", [fnn, ref], ids=["fastnn", "reference"])
def test_grad_matches_finite_differences(impl, activation, loss, kind):
    net, params, x, y = _case(activation, kind, np.float64, seed=1)
    _, grads = impl.grad(net, params, x, y, loss=loss)
    fd = _finite_difference(lambda p: impl.grad(net, p, x, y, loss=loss)[0], params)
    assert_tree_close(grads, fd, np.float64, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("activation", fnn.ACTIVATIONS)
def test_backward_is_the_vector_jacobian_product(activation):
    """backward(dy) equals the gradient of sum(dy * forward(x)), for params and for x."""
    net, params, x, _ = _case(activation, "dense", np.float64, seed=2)
    dy = np.random.default_rng(3).normal(size=(BATCH, SIZES[-1]))
    grads, dx = fnn.backward(net, params, x, dy)
    ref_grads, ref_dx = ref.backward(net, params, x, dy)
    assert_tree_close(grads, ref_grads, np.float64)
    np.testing.assert_allclose(dx, ref_dx, **TOL[np.dtype(np.float64)])

    def objective(p, xx=x):
        return float(np.sum(dy * fnn.forward(net, p, xx)))

    assert_tree_close(grads, _finite_difference(objective, params), np.float64, rtol=1e-5, atol=1e-7)
    h = 1e-6
    fd_x = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        fd_x[idx] = (objective(params, up) - objective(params, down)) / (2 * h)
    np.testing.assert_allclose(dx, fd_x, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_backward_float32_matches_reference(dtype):
    net, params, x, _ = _case("gelu", "dense", dtype, seed=4)
    dy = np.random.default_rng(5).normal(size=(BATCH, SIZES[-1]))
    grads, dx = fnn.backward(net, params, x, dy)
    ref_grads, ref_dx = ref.backward(net, params, x, dy)
    assert_tree_dtype(grads, dtype)
    assert dx.dtype == np.dtype(dtype)
    assert_tree_close(grads, ref_grads, dtype)
    np.testing.assert_allclose(dx, ref_dx, **TOL[np.dtype(dtype)])


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "sigmoid_cross_entropy"])
def test_cross_entropy_is_stable_for_huge_logits(loss, dtype):
    """Logits of +-1e4 (exp overflows in either dtype) give finite losses and gradients."""
    net = fnn.Net(sizes=(2, 3), activations=("identity",))
    W = np.array([[1e4, -1e4, 0.0], [0.0, 0.0, 1e4]], dtype=dtype)
    params = ((W, np.zeros(3, dtype=dtype)),)
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    y = np.array([1, 2, 0]) if loss == "softmax_cross_entropy" else np.array([[0, 1, 1], [1, 0, 1], [0, 0, 1.0]])
    value, grads = fnn.grad(net, params, x, y, loss=loss)
    ref_value, ref_grads = ref.grad(net, params, x, y, loss=loss)
    assert np.isfinite(value) and value > 1e3  # confidently wrong predictions cost ~1e4
    np.testing.assert_allclose(value, ref_value, rtol=1e-6)
    assert all(np.all(np.isfinite(a)) for pair in grads for a in pair)
    assert_tree_close(grads, ref_grads, dtype)
