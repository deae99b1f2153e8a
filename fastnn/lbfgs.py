"""``fit_lbfgs``: full-batch training with SciPy's L-BFGS-B over fastnn's compiled loss and
gradient (the loop is ``fastnn/_lbfgs_loop.py``, shared with ``fastnn.reference.fit_lbfgs``).

The params are views of one flat vector of their dtype, which each evaluation overwrites with
SciPy's iterate (a copy, converted to float32 where the net trains in float32); the compiled
gradient writes straight into another flat vector: on a fused net through the gradient kernel
``grad`` uses, its output laid out densely; on a larger net through ``kernels.network.grad_into``
into params-shaped views of it.
"""

import numpy as np

from ._kernels import network as _knet

from . import _threads
from ._buffers import workspace
from ._codes import activation_codes, loss_inputs
from ._lbfgs_loop import LbfgsOptions, run_lbfgs
from .network import checked_fused_grad, fused, outputs_into

__all__ = ["fit_lbfgs"]


def fit_lbfgs(net, params, x, y, loss="mse", *, max_iter=200, tol=1e-4, l2=0.0, max_fun=15000,
              validation_data=None, sample_weight=None):
    """Minimise mean loss + (l2 / 2) * sum of squared weights over all of (x, y) with L-BFGS-B;
    returns (params, history). With ``sample_weight`` the mean is weighted, as ``grad`` defines it
    (``validation_data`` may carry a third array of weights).

    Each iteration evaluates the loss and gradient over the whole training set (a few times in its
    line search). It stops after ``max_iter`` iterations or ``max_fun`` evaluations, or when the
    largest gradient component falls to ``tol`` (SciPy's ``gtol``), as scikit-learn's MLP with
    ``solver="lbfgs"`` does. Suited to small data sets (up to some thousands of rows), where it
    often reaches a lower loss than a stochastic optimizer in the same time.

    ``history["loss"]`` holds the objective (with the penalty) after each iteration, and
    ``history["val_loss"]`` the mean loss on ``validation_data=(x_val, y_val)`` when given;
    ``history.converged`` is True when SciPy reports convergence (False at the iteration or
    evaluation limit), ``history.message`` says which. A loss that is not finite at the start, or
    at the end, raises ``FloatingPointError``. The arguments are never written.
    """
    options = LbfgsOptions(loss, max_iter, tol, l2, max_fun, validation_data, sample_weight)
    return run_lbfgs(_CompiledObjective, net, params, x, y, options)


class _CompiledObjective:
    """The mean loss and its gradient at ``theta`` (see ``fastnn/_lbfgs_loop.py``)."""

    def __init__(self, net, layout, train, loss):
        dtype = train.x.dtype
        self.net, self.x = net, train.x
        self.theta = np.empty(layout.size, dtype)
        self.params = layout.views(self.theta)
        self.gradient = np.empty(layout.size, dtype)
        self.grads = layout.views(self.gradient)
        self.on_fused = fused(net)
        self.loss_in = loss_inputs(loss, train.target, train.labels, dtype, self.on_fused, train.weights)
        # The gradient kernel's packing of one params-shaped set (``_buffers.PackedSets``), here
        # without the gaps that start each array on a cache line.
        self.packing = (layout.shapes, layout.offsets, (0,))

    def loss_and_grad(self):
        net, params, x, loss_in = self.net, self.params, self.x, self.loss_in
        if self.on_fused and _threads.splits(net, x.shape[0]):
            value, grads = _threads.whole_grad(net, params, x, loss_in)
            for (W, b), (W_out, b_out) in zip(grads, self.grads):
                W_out[...] = W
                b_out[...] = b
            return float(value), self.gradient
        if self.on_fused:
            return checked_fused_grad(net, params, x, loss_in, self.gradient, self.packing), self.gradient
        self.gradient[...] = 0
        buffers, _ = workspace(net, params, x.shape[0], x.dtype)
        value = _knet.grad_into(params, activation_codes(net, x.dtype), x, loss_in, buffers, self.grads)
        return float(value), self.gradient

    def outputs(self, x2d):
        return outputs_into(self.net, self.params, x2d, 4096)
