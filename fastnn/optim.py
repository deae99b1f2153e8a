"""Optimizers with PyTorch's update rules and defaults, as pure functions.

``sgd``, ``rmsprop``, ``adagrad``, ``adam`` and ``adamw`` return an ``Optimizer``: an immutable
description (name, learning rate, settings). ``init_state(opt, params)`` returns the optimizer's
state, a NamedTuple whose moment fields mirror params; ``step(opt, params, grads, state)`` returns
new params and a new state and never writes into its arguments.

``lr`` is a positive number or a callable ``lr(count) -> float`` where ``count`` is the number of
updates already taken (0 for the first); a schedule may return 0 but never a negative or
non-finite value. The rules (also in ``kernels.optim``) match ``torch.optim`` for the same names
and arguments: adam's eps is added outside the square root, adam's ``weight_decay`` is added to
the gradient (L2), adamw's decays the parameters directly. Every optimizer takes ``clip_norm``:
when set, the gradients are first scaled down so their global L2 norm (over all arrays) is at most
``clip_norm``, as ``torch.nn.utils.clip_grad_norm_`` does.
"""

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, NamedTuple, Optional, Union

import numpy as np

from kernels import optim as _kopt

from . import _checks
from .model import empty_like_params
from .net import check_name
from .schedules import Schedule

OPTIMIZERS = ("sgd", "rmsprop", "adagrad", "adam", "adamw")

Params = tuple  # ((W, b), ...)


@dataclass(frozen=True)
class Optimizer:
    """An optimizer: ``name``, learning rate ``lr`` (number or schedule) and ``settings``."""

    name: str
    lr: Union[float, Callable[[int], float]]
    settings: tuple  # ((setting name, value), ...), in the constructor's argument order

    @cached_property
    def options(self):
        """``settings`` as a dict, built once (read on every step)."""
        return dict(self.settings)

    def __getattr__(self, key):  # opt.momentum, opt.betas, ...
        for name, value in object.__getattribute__(self, "settings"):
            if name == key:
                return value
        raise AttributeError(f"{type(self).__name__} {self.name!r} has no setting {key!r}")


class SGDState(NamedTuple):
    count: int                       # updates taken so far
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


_STATE_TYPES = {"sgd": SGDState, "rmsprop": RMSpropState, "adagrad": AdagradState,
                "adam": AdamState, "adamw": AdamState}
_KERNEL_CODES = {"sgd": _kopt.SGD, "rmsprop": _kopt.RMSPROP, "adagrad": _kopt.ADAGRAD,
                 "adam": _kopt.ADAM, "adamw": _kopt.ADAM}


def _check_lr(lr):
    if callable(lr):
        return lr
    return _checks.check_positive(lr, "learning rate lr")


def _check_fraction(value, what, upper_open=True):
    """A number in [0, 1) (or [0, 1] when upper_open is False)."""
    if not _checks.is_real(value):
        raise TypeError(f"{what} must be a number; got {type(value).__name__} {value!r}")
    hi_ok = value < 1 if upper_open else value <= 1
    if not (value >= 0 and hi_ok):
        raise ValueError(f"{what} must lie in [0, 1{')' if upper_open else ']'}; got {value!r}")
    return float(value)


def _clip_setting(clip_norm):
    """("clip_norm", None or a positive float): clip gradients to this global L2 norm before the update."""
    return ("clip_norm", None if clip_norm is None else _checks.check_positive(clip_norm, "clip_norm"))


def sgd(lr, momentum=0.0, nesterov=False, weight_decay=0.0, dampening=0.0, clip_norm=None):
    """Stochastic gradient descent, optionally with (Nesterov) momentum; torch.optim.SGD."""
    momentum = _check_fraction(momentum, "momentum", upper_open=False)
    dampening = _check_fraction(dampening, "dampening", upper_open=False)
    if nesterov and (momentum == 0 or dampening != 0):
        raise ValueError(f"nesterov needs momentum > 0 and dampening 0; got momentum {momentum}, "
                         f"dampening {dampening}")
    return Optimizer("sgd", _check_lr(lr), (
        ("momentum", momentum), ("nesterov", bool(nesterov)),
        ("weight_decay", _checks.check_nonnegative(weight_decay, "weight_decay")), ("dampening", dampening),
        _clip_setting(clip_norm)))


def rmsprop(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, clip_norm=None):
    """RMSprop; torch.optim.RMSprop (eps added after the square root)."""
    return Optimizer("rmsprop", _check_lr(lr), (
        ("alpha", _check_fraction(alpha, "alpha", upper_open=False)),
        ("eps", _checks.check_nonnegative(eps, "eps")),
        ("weight_decay", _checks.check_nonnegative(weight_decay, "weight_decay")),
        ("momentum", _checks.check_nonnegative(momentum, "momentum")), ("centered", bool(centered)),
        _clip_setting(clip_norm)))


def adagrad(lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
            clip_norm=None):
    """Adagrad; torch.optim.Adagrad."""
    return Optimizer("adagrad", _check_lr(lr), (
        ("lr_decay", _checks.check_nonnegative(lr_decay, "lr_decay")),
        ("weight_decay", _checks.check_nonnegative(weight_decay, "weight_decay")),
        ("initial_accumulator_value",
         _checks.check_nonnegative(initial_accumulator_value, "initial_accumulator_value")),
        ("eps", _checks.check_nonnegative(eps, "eps")), _clip_setting(clip_norm)))


def _adam_like(name, lr, betas, eps, weight_decay, clip_norm):
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair (beta1, beta2); got {betas!r}")
    b1 = _check_fraction(betas[0], "betas[0]")
    b2 = _check_fraction(betas[1], "betas[1]")
    return Optimizer(name, _check_lr(lr), (
        ("betas", (b1, b2)), ("eps", _checks.check_nonnegative(eps, "eps")),
        ("weight_decay", _checks.check_nonnegative(weight_decay, "weight_decay")), _clip_setting(clip_norm)))


def adam(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, clip_norm=None):
    """Adam with L2 weight decay added to the gradient; torch.optim.Adam."""
    return _adam_like("adam", lr, betas, eps, weight_decay, clip_norm)


def adamw(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, clip_norm=None):
    """Adam with decoupled weight decay, p <- p (1 - lr wd) before the step; torch.optim.AdamW."""
    return _adam_like("adamw", lr, betas, eps, weight_decay, clip_norm)


def check_optimizer(opt):
    if not isinstance(opt, Optimizer):
        raise TypeError(f"opt must be a fastnn optimizer (fastnn.{', fastnn.'.join(OPTIMIZERS)}); "
                        f"got {type(opt).__name__}")
    check_name("optimizer", opt.name, OPTIMIZERS)
    return opt


def init_state(opt, params):
    """The optimizer's initial state for ``params``: count 0, the moments it uses zeroed (adagrad's
    sum at ``initial_accumulator_value``), the ones it does not use None."""
    check_optimizer(opt)
    params, _ = _checks.check_param_pairs(params)
    fill = opt.options.get("initial_accumulator_value", 0.0)
    # np.zeros / np.full with shape and dtype: ~0.3 / ~1 us an array, np.full_like ~1.4 us.
    make = (lambda a: np.zeros(a.shape, a.dtype)) if fill == 0 else (lambda a: np.full(a.shape, fill, a.dtype))
    moments = [tuple((make(W), make(b)) for W, b in params) if used else None for used in _moments_wanted(opt)]
    return _STATE_TYPES[opt.name](0, *moments)


def check_state(opt, params, state):
    """Check that ``state`` is ``opt``'s state for ``params``; return it with checked moments."""
    expected = _STATE_TYPES[opt.name]
    if not isinstance(state, expected):
        raise TypeError(f"state for {opt.name} must be a {expected.__name__} (from fastnn.init_state); "
                        f"got {type(state).__name__}")
    count = state.count
    if (type(count) is not int and not _checks.is_int(count)) or count < 0:
        raise ValueError(f"state.count must be an int >= 0; got {count!r}")
    wanted = _moments_wanted(opt)
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


def _moments_wanted(opt):
    """Which of the state's moment fields (in field order) ``opt``'s settings use (kept on ``opt``)."""
    wanted = opt.__dict__.get("_moments_wanted")
    if wanted is None:
        wanted = opt.__dict__["_moments_wanted"] = _moments_used(opt)
    return wanted


def _moments_used(opt):
    s = opt.options
    if opt.name == "sgd":
        return (bool(s["momentum"]),)
    if opt.name == "rmsprop":
        return (True, s["centered"], bool(s["momentum"]))
    if opt.name == "adagrad":
        return (True,)
    return (True, True)


def lr_at(opt, count):
    """The learning rate of update number ``count`` (0-based)."""
    if not callable(opt.lr):
        return opt.lr
    value = opt.lr(count)
    if not _checks.is_real(value):
        raise TypeError(f"lr schedule must return a number; returned {type(value).__name__} at count {count}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"lr schedule returned {value!r} at count {count}; expected a finite value >= 0")
    return float(value)


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


def _hp_entries(opt, lr, t):
    """{hp index: value} for learning rate ``lr`` and update number ``t`` (1-based).

    The formulas hold for Python floats (one step) and float64 arrays (a table of steps) alike.
    """
    s = opt.options
    hp = {_kopt.LR: lr, _kopt.WD: s["weight_decay"], _kopt.CLIP: s["clip_norm"] or 0.0}
    if opt.name == "sgd":
        hp.update({_kopt.SGD_MOMENTUM: s["momentum"], _kopt.SGD_DAMPENING: s["dampening"],
                   _kopt.SGD_NESTEROV: float(s["nesterov"]), _kopt.SGD_FIRST: (t == 1) * 1.0})
    elif opt.name == "rmsprop":
        hp.update({_kopt.RMS_ALPHA: s["alpha"], _kopt.RMS_EPS: s["eps"], _kopt.RMS_MOMENTUM: s["momentum"],
                   _kopt.RMS_CENTERED: float(s["centered"])})
    elif opt.name == "adagrad":
        hp.update({_kopt.LR: lr / (1 + (t - 1) * s["lr_decay"]), _kopt.ADAGRAD_EPS: s["eps"]})
    else:
        b1, b2 = s["betas"]
        hp.update({_kopt.ADAM_BETA1: b1, _kopt.ADAM_BETA2: b2, _kopt.ADAM_EPS: s["eps"],
                   _kopt.ADAM_BC1: 1 - b1**t, _kopt.ADAM_BC2_SQRT: (1 - b2**t) ** 0.5,
                   _kopt.ADAM_DECAY: 1.0})
        if opt.name == "adamw":
            hp.update({_kopt.ADAM_DECAY: 1 - lr * s["weight_decay"], _kopt.WD: 0.0})
    return hp


_HP_ROWS = 64  # updates whose hyperparameters are computed together (see hyperparameters)


def hyperparameters(opt, count, dtype):
    """The kernel's ``hp`` array for update number ``count`` + 1, in ``dtype`` (layout: kernels.optim).

    With a constant lr or a built-in schedule the rows come from a table of the next 64 updates,
    built at once (``hyperparameter_table``, which ``fit`` uses too, so both take identical
    values) and kept on ``opt``: 0.3 us per train_step instead of 1.8 us on the tiny benchmark net.
    A user's lr callable is only ever called for the update at hand, so it gets a one-row table.
    """
    if callable(opt.lr) and not isinstance(opt.lr, Schedule):
        return hyperparameter_table(opt, count, 1, dtype)[0]
    tables = opt.__dict__.setdefault("_hp_tables", {})  # dtype -> (first count, table); not a field
    first, table = tables.get(dtype, (0, None))
    if table is None or not first <= count < first + _HP_ROWS:
        first, table = count, hyperparameter_table(opt, count, _HP_ROWS, dtype)
        tables[dtype] = (first, table)
    return table[count - first]


def hyperparameter_table(opt, count, n, dtype):
    """(n, HP_SIZE) array: row s is ``hyperparameters(opt, count + s, dtype)``."""
    counts = np.arange(count, count + n)
    table = np.zeros((n, _kopt.HP_SIZE))
    for index, value in _hp_entries(opt, lr_values(opt, counts), counts + 1.0).items():
        table[:, index] = value
    return table.astype(dtype)


def kernel_slots(state):
    """(the state's moments, fresh arrays for the updated ones): the update kernel's slots.

    Only the moments the optimizer uses, in field order (``kernels.optim.update_into``).
    """
    slots_in = tuple([m for m in state[1:] if m is not None])
    return slots_in, tuple([empty_like_params(m) for m in slots_in])


def state_with(state, count, slots):
    """A state like ``state`` with ``count`` and its used moments replaced by ``slots`` (in order)."""
    if not slots:  # no moments: the fields after count are all None
        return type(state)(count, *state[1:])
    slots = iter(slots)
    return type(state)(count, *[None if m is None else next(slots) for m in state[1:]])


def new_state(state, slots_out):
    """The state after one update: count + 1 and the written moments."""
    return state_with(state, state.count + 1, slots_out)


def prepare_step(opt, params, state):
    """Validated state plus everything the update kernel needs for one step."""
    state = check_state(opt, params, state)
    hp = hyperparameters(opt, state.count, params[0][0].dtype)
    slots_in, slots_out = kernel_slots(state)
    return state, _KERNEL_CODES[opt.name], hp, slots_in, slots_out


def step(opt, params, grads, state):
    """One update: returns (new params, new state). Arguments are left untouched."""
    check_optimizer(opt)
    params, _ = _checks.check_param_pairs(params)
    grads = _checks.check_like(params, grads, "grads")
    state, code, hp, slots_in, slots_out = prepare_step(opt, params, state)
    params_out = empty_like_params(params)
    _kopt.update_into(code, hp, params, grads, slots_in, params_out, slots_out)
    return params_out, new_state(state, slots_out)
