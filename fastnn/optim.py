"""Optimizers with PyTorch's update rules and defaults: their descriptions and their states.

``sgd``, ``rmsprop``, ``adagrad``, ``adam`` and ``adamw`` return an ``Optimizer``: an immutable
description (name, learning rate, settings; a setting reads as ``opt.momentum``). ``init_state(opt,
params)`` returns the optimizer's state, a NamedTuple whose moment fields mirror params. The update
itself, ``fastnn.step(opt, params, grads, state)``, is compiled and lives with the other compiled
updates in ``fastnn/training.py``; this module needs no compiler, so ``fastnn.reference`` shares it.

``lr`` is a positive number or a callable ``lr(count) -> float`` where ``count`` is the number of
updates already taken (0 for the first); a schedule may return 0 but never a negative or
non-finite value. The rules (``kernels/optim.py`` and ``fastnn/reference.py``) match ``torch.optim``
for the same names and arguments: adam's eps is added outside the square root, adam's
``weight_decay`` is added to the gradient (L2), adamw's decays the parameters directly. Every
optimizer takes ``clip_norm``: when set, the gradients are first scaled down so their global L2
norm (over all arrays) is at most ``clip_norm``, as ``torch.nn.utils.clip_grad_norm_`` does.

Each optimizer is one ``Rule`` in ``RULES``. Adding one takes: its state type, constructor and
``Rule`` here (the constructor exported from ``fastnn/__init__.py``); its update rule in
``kernels/optim.py`` (a code in ``RULE_CODES``, its hyperparameter names in ``HP_NAMES`` and a
branch of ``_update_array``) unless it reuses one there; its rule in ``fastnn/reference.py``'s
``RULES``. Nothing else names optimizers (``docs/architecture.md``).
"""

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Union

import numpy as np

from . import _checks
from .ensemble import is_stacked, members_of
from .schedules import Schedule

__all__ = ["OPTIMIZERS", "Optimizer", "Rule", "SGDState", "RMSpropState", "AdagradState", "AdamState",
           "sgd", "rmsprop", "adagrad", "adam", "adamw", "init_state"]

Params = tuple  # ((W, b), ...)


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: ``name``, learning rate ``lr`` (number or schedule) and ``settings``, the pairs
    (setting name, value) in the constructor's argument order; ``opt.<setting>`` reads one."""

    name: str
    lr: Union[float, Callable[[int], float]]
    settings: tuple

    def __getattr__(self, key):  # opt.momentum, opt.betas, ...
        for name, value in object.__getattribute__(self, "settings"):
            if name == key:
                return value
        raise AttributeError(f"{type(self).__name__} {self.name!r} has no setting {key!r}")


class SGDState(NamedTuple):
    count: int                         # updates taken so far
    momentum_buffer: Optional[Params]  # like params; None when momentum == 0


class RMSpropState(NamedTuple):
    count: int
    square_avg: Params                 # like params: running mean of g^2
    grad_avg: Optional[Params]         # like params when centered, else None
    momentum_buffer: Optional[Params]  # like params when momentum > 0, else None


class AdagradState(NamedTuple):
    count: int
    sum: Params                        # like params: running sum of g^2


class AdamState(NamedTuple):
    count: int
    exp_avg: Params                    # like params: first moment
    exp_avg_sq: Params                 # like params: second moment


class Rule(NamedTuple):
    """What the compiled path needs to know about one optimizer (the reference has its own rules).

    ``hyperparameters(opt, lr, t)`` gives the kernel rule's hyperparameters by the names in
    ``kernels.optim.HP_NAMES`` plus lr, weight_decay and clip_norm (0 for none), for learning rate
    ``lr`` and update number ``t`` (1-based): Python floats for one update or float64 arrays for a
    table of updates, so the formulas must hold for both.
    """

    state: type                                 # its state NamedTuple: count, then moment fields
    moments_used: Callable[[Optimizer], tuple]  # per moment field, in field order: used with these settings?
    hyperparameters: Callable                   # (opt, lr, t) -> {hyperparameter name: value}
    kernel: str                                 # the update rule in kernels/optim.py that applies it


def _sgd_hyperparameters(opt, lr, t):
    return {"lr": lr, "weight_decay": opt.weight_decay, "clip_norm": opt.clip_norm or 0.0,
            "momentum": opt.momentum, "dampening": opt.dampening, "nesterov": float(opt.nesterov),
            "first_step": (t == 1) * 1.0}


def _rmsprop_hyperparameters(opt, lr, t):
    return {"lr": lr, "weight_decay": opt.weight_decay, "clip_norm": opt.clip_norm or 0.0,
            "alpha": opt.alpha, "eps": opt.eps, "momentum": opt.momentum, "centered": float(opt.centered)}


def _adagrad_hyperparameters(opt, lr, t):
    return {"lr": lr / (1 + (t - 1) * opt.lr_decay), "weight_decay": opt.weight_decay,
            "clip_norm": opt.clip_norm or 0.0, "eps": opt.eps}


def _adam_hyperparameters(opt, lr, t, decoupled=False):
    b1, b2 = opt.betas
    return {"lr": lr, "weight_decay": 0.0 if decoupled else opt.weight_decay, "clip_norm": opt.clip_norm or 0.0,
            "beta1": b1, "beta2": b2, "eps": opt.eps,
            "bias_correction1": 1 - b1**t, "inv_sqrt_bias_correction2": (1 - b2**t) ** -0.5,
            "decay": 1 - lr * opt.weight_decay if decoupled else 1.0}


RULES = {
    "sgd": Rule(SGDState, lambda opt: (bool(opt.momentum),), _sgd_hyperparameters, "sgd"),
    "rmsprop": Rule(RMSpropState, lambda opt: (True, opt.centered, bool(opt.momentum)),
                    _rmsprop_hyperparameters, "rmsprop"),
    "adagrad": Rule(AdagradState, lambda opt: (True,), _adagrad_hyperparameters, "adagrad"),
    "adam": Rule(AdamState, lambda opt: (True, True), _adam_hyperparameters, "adam"),
    "adamw": Rule(AdamState, lambda opt: (True, True),
                  lambda opt, lr, t: _adam_hyperparameters(opt, lr, t, decoupled=True), "adam"),
}
OPTIMIZERS = tuple(RULES)


def _clip_setting(clip_norm):
    """("clip_norm", None or a positive float): clip gradients to this global L2 norm before the update."""
    return ("clip_norm", None if clip_norm is None else _checks.check_positive(clip_norm, "clip_norm"))


def sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0, clip_norm=None):
    """Stochastic gradient descent, optionally with (Nesterov) momentum; torch.optim.SGD."""
    momentum = _checks.check_fraction(momentum, "momentum", upper_open=False)
    dampening = _checks.check_fraction(dampening, "dampening", upper_open=False)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError(f"nesterov needs momentum > 0 and dampening 0; got momentum {momentum}, "
                         f"dampening {dampening}")
    return Optimizer("sgd", _checks.check_lr(lr), (
        ("momentum", momentum), ("nesterov", bool(nesterov)),
        ("weight_decay", _checks.check_nonnegative(weight_decay, "weight_decay")), ("dampening", dampening),
        _clip_setting(clip_norm)))


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, clip_norm=None):
    """RMSprop; torch.optim.RMSprop (eps added after the square root)."""
    return Optimizer("rmsprop", _checks.check_lr(lr), (
        ("alpha", _checks.check_fraction(alpha, "alpha", upper_open=False)),
        ("eps", _checks.check_nonnegative(eps, "eps")),
        ("weight_decay", _checks.check_nonnegative(weight_decay, "weight_decay")),
        ("momentum", _checks.check_nonnegative(momentum, "momentum")), ("centered", bool(centered)),
        _clip_setting(clip_norm)))


def adagrad(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
            clip_norm=None):
    """Adagrad; torch.optim.Adagrad."""
    return Optimizer("adagrad", _checks.check_lr(lr), (
        ("lr_decay", _checks.check_nonnegative(lr_decay, "lr_decay")),
        ("weight_decay", _checks.check_nonnegative(weight_decay, "weight_decay")),
        ("initial_accumulator_value",
         _checks.check_nonnegative(initial_accumulator_value, "initial_accumulator_value")),
        ("eps", _checks.check_nonnegative(eps, "eps")), _clip_setting(clip_norm)))


def _adam_like(name, lr, betas, eps, weight_decay, clip_norm):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
    b1 = _checks.check_fraction(betas[0], "betas[0]")
    b2 = _checks.check_fraction(betas[1], "betas[1]")
    return Optimizer(name, _checks.check_lr(lr), (
        ("betas", (b1, b2)), ("eps", _checks.check_nonnegative(eps, "eps")),
        ("weight_decay", _checks.check_nonnegative(weight_decay, "weight_decay")), _clip_setting(clip_norm)))


def adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=None):
    """Adam with L2 weight decay added to the gradient; torch.optim.Adam."""
    return _adam_like("adam", lr, betas, eps, weight_decay, clip_norm)


def adamw(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, clip_norm=None):
    """Adam with decoupled weight decay, p <- p (1 - lr wd) before the step; torch.optim.AdamW."""
    return _adam_like("adamw", lr, betas, eps, weight_decay, clip_norm)


def rule(opt):
    """The ``Rule`` of a checked optimizer."""
    return RULES[opt.name]


def check_optimizer(opt):
    if not isinstance(opt, Optimizer):
        raise TypeError(f"opt must be a fastnn optimizer (fastnn.{', fastnn.'.join(OPTIMIZERS)}); "
                        f"got {type(opt).__name__}")
    _checks.check_name("optimizer", opt.name, RULES)  # a dict: no tuple built per call
    return opt


def moments_used(opt):
    """Which of the state's moment fields (in field order) ``opt``'s settings use (kept on ``opt``)."""
    used = opt.__dict__.get("_moments_used")
    if used is None:
        used = opt.__dict__["_moments_used"] = tuple(bool(u) for u in rule(opt).moments_used(opt))
    return used


def init_state(opt, params):
    """The optimizer's initial state for ``params``: count 0, the moments it uses zeroed (adagrad's
    sum at ``initial_accumulator_value``), the ones it does not use None."""
    check_optimizer(opt)
    if is_stacked(params):  # an ensemble's: moments stacked alike
        params, _ = _checks.check_stacked_pairs(params, members_of(params))
    else:
        params, _ = _checks.check_param_pairs(params)
    fill = dict(opt.settings).get("initial_accumulator_value", 0.0)
    # With shape and dtype given, np.zeros / np.full take a fraction of np.zeros_like's time.
    make = (lambda a: np.zeros(a.shape, a.dtype)) if fill == 0 else (lambda a: np.full(a.shape, fill, a.dtype))
    moments = [tuple((make(W), make(b)) for W, b in params) if used else None for used in moments_used(opt)]
    return rule(opt).state(0, *moments)


def check_state(opt, params, state):
    """Check that ``state`` is ``opt``'s state for ``params``; return it with checked moments."""
    expected = rule(opt).state
    if not isinstance(state, expected):
        raise TypeError(f"state for {opt.name} must be a {expected.__name__} (from fastnn.init_state); "
                        f"got {type(state).__name__}")
    count = state.count
    if (type(count) is not int and not _checks.is_int(count)) or count < 0:
        raise ValueError(f"state.count must be an int >= 0; got {count!r}")
    wanted = moments_used(opt)
    if not any(wanted) and not any(m is not None for m in state[1:]):
        return state if type(count) is int else expected(int(count), *state[1:])  # plain SGD: no moments
    shapes = None
    moments = []
    for field, want, moment in zip(expected._fields[1:], wanted, state[1:]):
        if want and moment is None:
            raise ValueError(f"state.{field} is None but {opt.name} with these settings needs it; "
                             "create the state with fastnn.init_state(opt, params)")
        if not want and moment is not None:
            raise ValueError(f"state.{field} is set but {opt.name} with these settings does not use it; "
                             "create the state with fastnn.init_state(opt, params)")
        if moment is not None:
            if shapes is None:
                shapes = tuple((W.shape, b.shape) for W, b in params)
            try:
                moment = _checks.check_like(params, moment, "state." + field, shapes)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"{exc}: the optimizer state belongs to other params; "
                                "create it with fastnn.init_state(opt, params)") from None
        moments.append(moment)
    return expected(int(count), *moments)


def lr_at(opt, count):
    """The learning rate of update number ``count`` (0-based)."""
    if not callable(opt.lr):
        return opt.lr
    return _checks.check_lr_value(opt.lr(count), count)


def lr_values(opt, counts):
    """Learning rates of updates ``counts`` (an int array) as a float64 array.

    Built-in schedules (``fastnn.schedules``) evaluate the whole array at once; any other callable
    is called once per count and checked like ``lr_at``.
    """
    if not callable(opt.lr):
        return np.full(counts.shape, opt.lr)
    if isinstance(opt.lr, Schedule):
        return opt.lr(counts)  # validated when the schedule was built: finite, >= 0
    return np.array([lr_at(opt, int(c)) for c in counts], dtype=np.float64)
