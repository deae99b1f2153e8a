"""The L-BFGS loop of ``fit_lbfgs``, shared by the compiled path and the reference.

``run_lbfgs`` checks the arguments, lays the params out in one flat vector (``FlatLayout``: W1,
b1, W2, b2, ... one after the other, no gaps) and hands SciPy's L-BFGS-B an objective that
returns (f, df/dtheta) for a flat float64 vector theta:

    f(theta) = mean loss over all of (x, y) + (l2 / 2) * (sum of the squared weights)

(biases are not penalised). Only the *objective* differs between ``fastnn.fit_lbfgs`` (the
compiled gradient written straight into a flat vector: ``fastnn/lbfgs.py``) and
``fastnn.reference.fit_lbfgs`` (``reference.grad``, copied into one). It is made by
``make_objective(net, layout, train, loss)`` (``train`` a checked ``_fit_loop.Dataset``) and
provides ``params`` (params-shaped views of its own flat vector ``theta``, of the params'
dtype), ``loss_and_grad()`` (the mean loss at ``theta`` and its gradient as a flat vector of that
dtype) and ``outputs(x2d)`` (the network's outputs at ``theta``).
"""

import math
import time
from typing import NamedTuple

import numpy as np

from . import _checks
from ._fit_loop import Dataset
from .callbacks import History
from .losses import mean_loss


class LbfgsOptions(NamedTuple):
    """``fit_lbfgs``'s arguments after (net, params, x, y), with its defaults."""

    loss: str = "mse"
    max_iter: int = 200
    tol: float = 1e-4
    l2: float = 0.0
    max_fun: int = 15000
    validation_data: object = None    # (x_val, y_val), (x_val, y_val, sample weights) or None
    sample_weight: object = None      # one weight >= 0 per sample of x, or None


class FlatLayout:
    """Params ((W, b), ...) of ``shapes`` (``Net.shapes()``) packed densely in one flat vector:
    layer l's W from ``offsets[2 l]``, its b from ``offsets[2 l + 1]``; ``weights`` marks the
    elements that are weights (the L2 penalty's)."""

    def __init__(self, shapes):
        sizes = [size for (n_in, n_out), _ in shapes for size in (n_in * n_out, n_out)]
        self.shapes = tuple((n_in, n_out) for (n_in, n_out), _ in shapes)
        self.offsets = np.cumsum([0] + sizes[:-1]).astype(np.int64)
        self.size = int(sum(sizes))
        self.weights = np.zeros(self.size, dtype=bool)
        for l, (n_in, n_out) in enumerate(self.shapes):
            self.weights[self.offsets[2 * l]:self.offsets[2 * l] + n_in * n_out] = True

    def views(self, flat):
        """Params-shaped views of ``flat``."""
        return tuple((flat[self.offsets[2 * l]:self.offsets[2 * l] + n_in * n_out].reshape(n_in, n_out),
                      flat[self.offsets[2 * l + 1]:self.offsets[2 * l + 1] + n_out])
                     for l, (n_in, n_out) in enumerate(self.shapes))

    def pack(self, pairs, out):
        """``out`` (a flat vector) <- the arrays of ``pairs``, params-shaped; returns out."""
        for (W, b), (W_out, b_out) in zip(pairs, self.views(out)):
            W_out[...] = W
            b_out[...] = b
        return out


class Penalised:
    """SciPy's objective: ``penalised(theta)`` = (f, df/dtheta) as float64, f = the objective's mean
    loss at theta + (l2 / 2) * (sum of the squared weights). Keeps the last theta evaluated and
    its f (``last_theta``, ``last_value``). f is inf where the loss is not finite, so that the
    line search backs off, except at the first evaluation, which raises FloatingPointError."""

    def __init__(self, objective, layout, l2):
        self.objective, self.weights, self.l2 = objective, layout.weights, l2
        self.last_theta, self.last_value = None, None

    def __call__(self, theta):
        self.objective.theta[...] = theta
        value, g = self.objective.loss_and_grad()
        g = g.astype(np.float64)  # a new array: SciPy may keep the one returned
        if self.l2:
            w = theta[self.weights]
            value += 0.5 * self.l2 * float(w @ w)
            g[self.weights] += self.l2 * w
        if not math.isfinite(value):
            if self.last_theta is None:
                raise FloatingPointError(f"the loss at the initial params is {value}; check the inputs' scale")
            value = math.inf
        self.last_theta, self.last_value = theta.copy(), value
        return value, g


def _checked(options):
    _checks.check_loss(options.loss)
    if options.validation_data is not None and (not isinstance(options.validation_data, (tuple, list))
                                                or len(options.validation_data) not in (2, 3)):
        raise TypeError("validation_data must be a pair (x_val, y_val) or a triple (x_val, y_val, sample_weight)")
    return options._replace(max_iter=_checks.check_positive_int(options.max_iter, "max_iter"),
                            max_fun=_checks.check_positive_int(options.max_fun, "max_fun"),
                            tol=_checks.check_nonnegative(options.tol, "tol"),
                            l2=_checks.check_nonnegative(options.l2, "l2"))


def run_lbfgs(make_objective, net, params, x, y, options):
    """Minimise f from ``params`` over (x, y) with L-BFGS-B, the objective from
    ``make_objective`` (see the module docstring); returns (params, history)."""
    from scipy.optimize import minimize  # imported here: SciPy's optimize takes ~0.1 s to import

    params, dtype = _checks.check_params(net, params)
    options = _checked(options)
    train = Dataset(net, (x, y, options.sample_weight), options.loss, dtype, "x")
    val = None
    if options.validation_data is not None:
        val = Dataset(net, options.validation_data, options.loss, dtype, "validation x")
    layout = FlatLayout(net.shapes())
    objective = make_objective(net, layout, train, options.loss)
    penalised = Penalised(objective, layout, options.l2)
    history = History()
    start = [time.perf_counter()]

    def record(theta):
        """Called by SciPy after each iteration with its iterate."""
        if not np.array_equal(theta, penalised.last_theta):
            penalised(theta)  # the last evaluation was a line-search trial, not the iterate
        logs = {"loss": penalised.last_value}
        if val is not None:
            logs["val_loss"] = mean_loss(options.loss, objective.outputs(val.x), val.target, val.labels, val.weights)
        now = time.perf_counter()
        logs["time"], start[0] = now - start[0], now
        history.record(logs)

    theta0 = layout.pack(params, np.empty(layout.size, np.float64))
    result = minimize(penalised, theta0, method="L-BFGS-B", jac=True, callback=record,
                      options={"maxiter": options.max_iter, "maxfun": options.max_fun, "gtol": options.tol})
    if not math.isfinite(result.fun):
        raise FloatingPointError(f"the loss became {result.fun} after {history.epochs} iterations; the model "
                                 "diverged. Try scaled inputs or a larger l2")
    history.converged = bool(result.success)
    history.message = str(result.message)
    return tuple((W.astype(dtype), b.astype(dtype)) for W, b in layout.views(result.x)), history
