"""The pure-NumPy reference path: the same public functions as ``fastnn``, written for clarity.

This module is the oracle for the tests and the baseline for the benchmarks. It never uses the
Numba kernels and runs where Numba is not installed. It shares with the compiled path only what
must be the same for both: the input validation (``_checks``), the optimizer descriptions and
states (``optim``), the loss values (``losses.mean_loss``), ``fit``'s epoch loop (``_fit_loop``)
and ``fit_lbfgs``'s loop (``_lbfgs_loop``), so both paths accept and reject exactly the same
inputs and take the same batches.
Every activation, derivative, loss gradient and update rule here is written out directly in NumPy,
in the params' dtype.
"""

import math

import numpy as np
from scipy.special import ndtr

from . import _checks
from ._fit_loop import FitOptions, run_fit
from .ensemble import (fit_members, is_stacked, member, member_batches, member_outputs, member_state, members_of,
                       stack)
from ._lbfgs_loop import LbfgsOptions, run_lbfgs
from .losses import HUBER_DELTA, VARIANCE_FLOOR, mean_loss
from .optim import check_optimizer, check_state, lr_at

__all__ = ["forward", "grad", "backward", "step", "train_step", "fit", "fit_lbfgs"]

LEAKY_SLOPE = 0.01
ELU_ALPHA = 1.0


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def _gelu_cdf(z):
    """Phi(z), the standard normal CDF: SciPy's ndtr keeps its relative accuracy in the lower
    tail, where the erf form 0.5 (1 + erf(z / sqrt 2)) cancels."""
    return ndtr(z).astype(z.dtype, copy=False)


# name -> (f(z), f'(z)); all elementwise, all keep the dtype of z.
_ACTIVATIONS = {
    "identity": (lambda z: z, lambda z: np.ones_like(z)),
    "relu": (lambda z: np.where(z < 0, 0, z).astype(z.dtype), lambda z: (z > 0).astype(z.dtype)),
    "leaky_relu": (lambda z: np.where(z < 0, z.dtype.type(LEAKY_SLOPE) * z, z),
                   lambda z: np.where(z > 0, 1, LEAKY_SLOPE).astype(z.dtype)),
    "elu": (lambda z: np.where(z < 0, ELU_ALPHA * np.expm1(np.minimum(z, 0)), z).astype(z.dtype),
            lambda z: np.where(z > 0, 1, ELU_ALPHA * np.exp(np.minimum(z, 0))).astype(z.dtype)),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    "softplus": (lambda z: np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))), _sigmoid),
    "gelu": (lambda z: z * _gelu_cdf(z),
             lambda z: _gelu_cdf(z) + z * np.exp(-z * z / 2) / np.sqrt(z.dtype.type(2 * np.pi))),
    "silu": (lambda z: z * _sigmoid(z), lambda z: _sigmoid(z) * (1 + z * (1 - _sigmoid(z)))),
}


def _forward_layers(net, params, x):
    """Pre-activations zs and activations acts of every layer, acts[0] = x."""
    zs, acts = [], [x]
    for (W, b), name in zip(params, net.activations):
        z = acts[-1] @ W + b
        zs.append(z)
        acts.append(_ACTIVATIONS[name][0](z))
    return zs, acts


def _backward_layers(net, params, zs, acts, dout):
    """Chain rule from dL/d(output) back to (grads, dL/dx)."""
    grads = []
    d = dout
    for l in range(len(params) - 1, -1, -1):
        dz = d * _ACTIVATIONS[net.activations[l]][1](zs[l])
        grads.append((acts[l].T @ dz, dz.sum(axis=0)))
        d = dz @ params[l][0].T
    return tuple(reversed(grads)), d


def _loss(name, out, target, labels, weights=None):
    """(mean loss, dL/d(out)) for raw outputs ``out``; with ``weights`` (n,) the weighted mean over
    the samples, each row's gradient scaled by n w_i / sum(w)."""
    n, k = out.shape
    value = mean_loss(name, out, target, labels, weights)
    if n == 0:
        return value, np.zeros_like(out)
    if weights is not None:
        dout = _loss(name, out, target, labels)[1].astype(np.float64)
        return value, (dout * (n * weights.astype(np.float64) / weights.sum(dtype=np.float64))[:, None]).astype(out.dtype)
    if name == "softmax_cross_entropy":
        if labels is not None:
            target = np.zeros_like(out)
            target[np.arange(n), labels] = 1
        e = np.exp(out - out.max(axis=1, keepdims=True))
        softmax = e / e.sum(axis=1, keepdims=True)
        dout = (softmax * target.sum(axis=1, keepdims=True) - target) / n
        return value, dout.astype(out.dtype)
    if name == "gaussian_nll":  # PyTorch's, the clamp left out of the gradient (kernels/losses.py)
        d = k // 2
        z = out.astype(np.float64)
        log_v = np.maximum(z[:, d:], np.log(VARIANCE_FLOOR))
        e = z[:, :d] - target
        e2_over_v = e * e * np.exp(-log_v)
        dout = np.concatenate([e * np.exp(-log_v), 0.5 * np.exp(z[:, d:] - log_v) * (1 - e2_over_v)], axis=1)
        return value, (dout / (n * d)).astype(out.dtype)
    e = out - target
    size = e.size
    if name == "mse":
        dout = 2 * e / size
    elif name == "mae":
        dout = np.sign(e) / size
    elif name == "huber":
        dout = np.clip(e, -HUBER_DELTA, HUBER_DELTA) / size
    else:  # sigmoid_cross_entropy
        dout = (_sigmoid(out) - target) / size
    return value, dout.astype(out.dtype)


def forward(net, params, x):
    """Network output for x: (batch, n_in) -> (batch, n_out); a 1-D x (one sample) -> 1-D output.
    Stacked params (an ensemble) give (K, batch, n_out), as ``fastnn.forward`` does."""
    if is_stacked(params):
        return member_outputs(forward, net, params, x)
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    out = _forward_layers(net, params, x2d)[1][-1]
    return out[0] if single else out


def grad(net, params, x, y_true, loss="mse", sample_weight=None):
    """(mean loss as a Python float, dL/dparams shaped like params) for one batch; with
    ``sample_weight``, the weighted mean sum_i w_i l_i / sum_i w_i. Stacked params: (losses (K,),
    stacked grads), member by member."""
    if is_stacked(params):
        count = members_of(params)
        per_member, batch = member_batches(count, loss, x, y_true, sample_weight)
        each = []
        for k in range(count):
            x_k, y_k, w_k = _member_part(batch, per_member, k)
            each.append(grad(net, member(params, k), x_k, y_k, loss, w_k))
        return np.array([value for value, _ in each]), stack([g for _, g in each])
    params, dtype = _checks.check_params(net, params)
    _checks.check_loss(loss)
    x2d, single = _checks.check_input(net, x, dtype)
    target, labels = _checks.check_targets(loss, y_true, x2d.shape[0], net.sizes[-1], single, dtype)
    weights = _checks.check_sample_weight(sample_weight, x2d.shape[0], dtype, single)
    zs, acts = _forward_layers(net, params, x2d)
    value, dout = _loss(loss, acts[-1], target, labels, weights)
    grads, _ = _backward_layers(net, params, zs, acts, dout)
    return value, grads


def backward(net, params, x, dy):
    """Vector-Jacobian product: (dL/dparams, dL/dx) for dy = dL/d(output). Stacked params: stacked
    grads and dx (K, batch, n_in), member by member (dy (K, batch, n_out) or shared)."""
    if is_stacked(params):
        count = members_of(params)
        xs, dys = np.asarray(x), np.asarray(dy)
        single = xs.ndim == 1
        if single:  # one sample: a batch of one row, as fastnn.backward takes it
            xs, dys = xs[None], dys[..., None, :]
        per_member, batch = member_batches(count, "mse", xs, dys, names=("x", "dy"))
        each = [backward(net, member(params, k), *_member_part(batch, per_member, k)) for k in range(count)]
        dx = np.stack([d for _, d in each])
        return stack([g for g, _ in each]), (dx[:, 0] if single else dx)
    params, dtype = _checks.check_params(net, params)
    x2d, single = _checks.check_input(net, x, dtype)
    dy2d = _checks.check_output_grad(net, dy, x2d.shape[0], single, dtype)
    zs, acts = _forward_layers(net, params, x2d)
    grads, dx = _backward_layers(net, params, zs, acts, dy2d)
    return grads, (dx[0] if single else dx)


# Optimizer rules for one array: (p, g, moments as a dict, hyperparameters) -> (p, moments).

def _sgd(p, g, m, h):
    g = g + h["weight_decay"] * p
    if h["momentum"]:
        buf = g if h["t"] == 1 else h["momentum"] * m["momentum_buffer"] + (1 - h["dampening"]) * g
        m = {"momentum_buffer": buf}
        g = g + h["momentum"] * buf if h["nesterov"] else buf
    return p - h["lr"] * g, m


def _rmsprop(p, g, m, h):
    g = g + h["weight_decay"] * p
    a = h["alpha"]
    new = {"square_avg": a * m["square_avg"] + (1 - a) * g * g}
    avg = new["square_avg"]
    if h["centered"]:
        new["grad_avg"] = a * m["grad_avg"] + (1 - a) * g
        avg = avg - new["grad_avg"] ** 2
    avg = np.sqrt(avg) + h["eps"]
    if h["momentum"]:
        new["momentum_buffer"] = h["momentum"] * m["momentum_buffer"] + g / avg
        return p - h["lr"] * new["momentum_buffer"], new
    return p - h["lr"] * g / avg, new


def _adagrad(p, g, m, h):
    g = g + h["weight_decay"] * p
    clr = h["lr"] / (1 + (h["t"] - 1) * h["lr_decay"])
    total = m["sum"] + g * g
    return p - clr * g / (np.sqrt(total) + h["eps"]), {"sum": total}


def _adam(p, g, m, h, decoupled=False):
    b1, b2 = h["betas"]
    if decoupled:
        p = p * (1 - h["lr"] * h["weight_decay"])
    else:
        g = g + h["weight_decay"] * p
    exp_avg = b1 * m["exp_avg"] + (1 - b1) * g
    exp_avg_sq = b2 * m["exp_avg_sq"] + (1 - b2) * g * g
    bc1, bc2 = 1 - b1 ** h["t"], 1 - b2 ** h["t"]
    denom = np.sqrt(exp_avg_sq) / math.sqrt(bc2) + h["eps"]
    return p - (h["lr"] / bc1) * exp_avg / denom, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def _clip_by_global_norm(grads, clip_norm):
    """grads * min(1, clip_norm / (norm + 1e-6)), norm over all arrays (torch's clip_grad_norm_)."""
    norm = np.sqrt(sum(np.sum(g * g) for pair in grads for g in pair))
    scale = np.minimum(clip_norm / (norm + 1e-6), 1).astype(norm.dtype)
    return tuple(tuple(g * scale for g in pair) for pair in grads)


RULES = {"sgd": _sgd, "rmsprop": _rmsprop, "adagrad": _adagrad, "adam": _adam,
          "adamw": lambda p, g, m, h: _adam(p, g, m, h, decoupled=True)}


def step(opt, params, grads, state):
    """One update: returns (new params, new state). Maps the one-array rule over every array.
    Stacked params: member by member (gradient clipping per member)."""
    if is_stacked(params):
        count = members_of(params)
        check_optimizer(opt)
        each = [step(opt, member(params, k), member(grads, k), member_state(state, k)) for k in range(count)]
        moments = [None if m is None else stack([s[f] for _, s in each]) for f, m in enumerate(state[1:], 1)]
        return stack([p for p, _ in each]), type(state)(state.count + 1, *moments)
    check_optimizer(opt)
    params, dtype = _checks.check_param_pairs(params)
    grads = _checks.check_like(params, grads, "grads")
    state = check_state(opt, params, state)
    h = dict(opt.settings, lr=lr_at(opt, state.count), t=state.count + 1)
    if h.get("clip_norm") is not None:
        grads = _clip_by_global_norm(grads, h["clip_norm"])
    used = [f for f in state._fields[1:] if getattr(state, f) is not None]
    rule = RULES[opt.name]
    # results[l][i] = (new array, {moment: new moment}) for array i (W or b) of layer l.
    results = [[rule(p, g, {f: getattr(state, f)[l][i] for f in used}, h)
                for i, (p, g) in enumerate(zip(layer, grads[l]))] for l, layer in enumerate(params)]

    def gather(pick):
        return tuple(tuple(np.asarray(pick(r), dtype=dtype) for r in layer) for layer in results)

    moments = {f: gather(lambda r, f=f: r[1][f]) if f in used else None for f in state._fields[1:]}
    return gather(lambda r: r[0]), type(state)(state.count + 1, **moments)


def _member_part(batch, per_member, k):
    """Member k's (x, y_true, sample_weight) from ``member_batches``' arrays."""
    return tuple(a[k] if per_member and a is not None else a for a in batch)


def train_step(net, opt, params, state, x, y_true, loss="mse", sample_weight=None):
    """(new params, new state, loss before the update): grad followed by step."""
    check_optimizer(opt)
    value, grads = grad(net, params, x, y_true, loss, sample_weight)
    params, state = step(opt, params, grads, state)
    return params, state, value


def fit(net, params, x, y, loss="mse", optimizer=None, epochs=10, batch_size=32, *, seed=0, shuffle=True,
        drop_last=False, validation_data=None, validation_split=0.0, early_stopping=None, callbacks=(),
        metrics=(), progress=None, state=None, split="last", sample_weight=None, bootstrap=False):
    """``fastnn.fit`` as a Python loop of ``train_step``: same arguments, same batches, same history keys."""
    options = FitOptions(loss, optimizer, epochs, batch_size, seed, shuffle, drop_last, validation_data,
                         validation_split, early_stopping, callbacks, metrics, progress, state, split, sample_weight,
                         bootstrap)
    if is_stacked(params):
        return fit_members(fit, net, params, x, y, options._asdict())
    return run_fit(_LoopSession, net, params, x, y, options)


class _LoopSession:
    """``fit``'s epochs as a Python loop of ``train_step`` over the batches (see ``fastnn._fit_loop``)."""

    def __init__(self, net, opt, params, state, train, options):
        self.net, self.opt, self.params, self.state, self.loss = net, opt, params, state, options.loss
        self.x = train.x
        self.y = train.labels if train.labels is not None else train.target
        self.weights = train.weights
        self.batch_size = options.batch_size

    def epoch(self, order, n_batches, bar):
        total, seen, size = 0.0, 0, self.batch_size
        for k in range(n_batches):
            idx = order[k * size:(k + 1) * size]
            weights = None if self.weights is None else self.weights[idx]
            self.params, self.state, value = train_step(self.net, self.opt, self.params, self.state,
                                                        self.x[idx], self.y[idx], self.loss, weights)
            count = len(idx) if weights is None else float(weights.sum(dtype=np.float64))
            total += value * count
            seen += count
            if bar.live:
                bar.report(k + 1, total / seen)
            if not math.isfinite(value):
                break
        return total / seen

    def outputs(self, x2d):
        return _forward_layers(self.net, self.params, x2d)[1][-1]

    # train_step returns fresh arrays that nothing writes into: no copies needed.
    def params_copy(self):
        return self.params

    def state_copy(self):
        return self.state

    def result(self):
        return self.params, self.state


def fit_lbfgs(net, params, x, y, loss="mse", *, max_iter=200, tol=1e-4, l2=0.0, max_fun=15000,
              validation_data=None, sample_weight=None):
    """``fastnn.fit_lbfgs`` with ``grad`` for its gradient: same arguments, same history keys."""
    options = LbfgsOptions(loss, max_iter, tol, l2, max_fun, validation_data, sample_weight)
    return run_lbfgs(_FlatObjective, net, params, x, y, options)


class _FlatObjective:
    """The mean loss and its gradient at ``theta`` (see ``fastnn._lbfgs_loop``), through ``grad``."""

    def __init__(self, net, layout, train, loss):
        self.net, self.layout, self.loss = net, layout, loss
        self.x = train.x
        self.y = train.labels if train.labels is not None else train.target
        self.weights = train.weights
        self.theta = np.empty(layout.size, train.x.dtype)
        self.params = layout.views(self.theta)
        self.gradient = np.empty(layout.size, train.x.dtype)

    def loss_and_grad(self):
        value, grads = grad(self.net, self.params, self.x, self.y, self.loss, self.weights)
        return value, self.layout.pack(grads, self.gradient)

    def outputs(self, x2d):
        return _forward_layers(self.net, self.params, x2d)[1][-1]
