"""Input sensitivities of a network: ``jacobian`` and ``jvp``, for surrogate models (what moves an
output, and by how much), through ``backward``'s vector-Jacobian products."""

import numpy as np

from . import _checks
from .network import backward, forward

__all__ = ["jacobian", "jvp"]


def jacobian(net, params, x):
    """d output / d input per sample: (batch, n_out, n_in) for x (batch, n_in), (n_out, n_in) for
    one sample x (n_in,). Entry [i, o, j] is d out[i, o] / d x[i, j], in the params' dtype; one
    ``backward`` per output unit (a unit dy picks it out)."""
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    batch, n_out = x2d.shape[0], net.sizes[-1]
    out = np.empty((batch, n_out, net.sizes[0]), dtype=dtype)
    dy = np.zeros((batch, n_out), dtype=dtype)
    for o in range(n_out):
        dy[:, o] = 1
        out[:, o, :] = backward(net, params, x2d, dy)[1]
        dy[:, o] = 0
    return out[0] if single else out


def jvp(net, params, x, v):
    """(outputs, Jacobian-vector products): forward(x) and J(x) v per sample, v shaped like x (one
    direction per sample) or (n_in,) (one direction for all); (batch, n_out) each, or (n_out,)
    for one sample."""
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    v_arr = _checks.real_array(v, "v")
    n_in = net.sizes[0]
    if v_arr.shape not in ((n_in,), x2d.shape) and not (single and v_arr.shape == (n_in,)):
        raise ValueError(f"v must have shape ({n_in},) or x's shape {x2d.shape if not single else (n_in,)}; "
                         f"got {v_arr.shape}")
    directions = np.broadcast_to(v_arr.astype(dtype, copy=False), x2d.shape)
    products = np.einsum("boj,bj->bo", jacobian(net, params, x2d), directions)
    outputs = forward(net, params, x2d)
    return (outputs[0], products[0]) if single else (outputs, products)
