"""Learning-rate schedules: pass one as ``lr=`` to any optimizer.

A schedule maps the update count (0 for the first update, counted in optimizer steps, not epochs)
to a learning rate. It is an immutable object that works on a single int and on an int array (the
compiled ``fit`` evaluates a whole epoch of steps at once). Every built-in schedule returns finite
values >= 0. For schedules counted in epochs, multiply by the steps per epoch,
``ceil(n_samples / batch_size)`` (``n_samples // batch_size`` with ``drop_last``).

- ``constant(lr)``:                            lr
- ``step_decay(lr, step_size, gamma=0.1)``:    lr * gamma ** (count // step_size)
- ``exponential(lr, gamma)``:                  lr * gamma ** count
- ``cosine(lr, total_steps, min_lr=0)``:       min_lr + (lr - min_lr) (1 + cos(pi c / total_steps)) / 2,
                                               c = min(count, total_steps): min_lr after total_steps
- ``warmup_cosine(lr, warmup_steps, total_steps, min_lr=0)``: lr (count + 1) / warmup_steps for the
  first warmup_steps updates, then cosine from lr to min_lr over the remaining total - warmup steps.
"""

from dataclasses import dataclass

import numpy as np

from . import _checks

__all__ = ["Schedule", "constant", "step_decay", "exponential", "cosine", "warmup_cosine"]


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: ``kind`` and its ``settings``; call it with an update count."""

    kind: str
    lr: float
    settings: tuple  # ((name, value), ...)

    def __call__(self, count):
        c = np.asarray(count, dtype=np.float64)
        s = dict(self.settings)
        if self.kind == "constant":
            value = np.full(c.shape, self.lr)
        elif self.kind == "step_decay":
            value = self.lr * s["gamma"] ** np.floor(c / s["step_size"])
        elif self.kind == "exponential":
            value = self.lr * s["gamma"] ** c
        else:
            warm = s.get("warmup_steps", 0)
            progress = np.clip((c - warm) / (s["total_steps"] - warm), 0.0, 1.0)
            value = s["min_lr"] + (self.lr - s["min_lr"]) * 0.5 * (1.0 + np.cos(np.pi * progress))
            if warm:
                value = np.where(c < warm, self.lr * (c + 1) / warm, value)
        return float(value) if value.ndim == 0 else value


def _factor(value, what):
    """A decay factor in (0, 1]."""
    value = _checks.check_positive(value, what)
    if value > 1:
        raise ValueError(f"{what} must lie in (0, 1]; got {value!r}")
    return value


def _min_lr(min_lr, lr):
    if min_lr == 0:
        return 0.0
    min_lr = _checks.check_positive(min_lr, "min_lr")
    if min_lr > lr:
        raise ValueError(f"min_lr must not exceed lr; got min_lr {min_lr} > lr {lr}")
    return min_lr


def constant(lr):
    """lr at every update."""
    return Schedule("constant", _checks.check_positive(lr, "lr"), ())


def step_decay(lr, step_size, gamma=0.1):
    """lr multiplied by gamma every ``step_size`` updates (torch.optim.lr_scheduler.StepLR)."""
    step_size = _checks.check_positive_int(step_size, "step_size")
    return Schedule("step_decay", _checks.check_positive(lr, "lr"),
                    (("step_size", step_size), ("gamma", _factor(gamma, "gamma"))))


def exponential(lr, gamma):
    """lr multiplied by gamma at every update (torch.optim.lr_scheduler.ExponentialLR)."""
    return Schedule("exponential", _checks.check_positive(lr, "lr"), (("gamma", _factor(gamma, "gamma")),))


def cosine(lr, total_steps, min_lr=0.0):
    """Cosine annealing from lr to min_lr over ``total_steps`` updates, then min_lr."""
    lr = _checks.check_positive(lr, "lr")
    total = _checks.check_positive_int(total_steps, "total_steps")
    return Schedule("cosine", lr, (("total_steps", total), ("min_lr", _min_lr(min_lr, lr))))


def warmup_cosine(lr, warmup_steps, total_steps, min_lr=0.0):
    """Linear warm-up to lr over ``warmup_steps`` updates, then cosine annealing to min_lr by
    ``total_steps`` (counted from the first update, so total_steps > warmup_steps)."""
    lr = _checks.check_positive(lr, "lr")
    warm = _checks.check_positive_int(warmup_steps, "warmup_steps")
    total = _checks.check_positive_int(total_steps, "total_steps")
    if total <= warm:
        raise ValueError(f"total_steps must exceed warmup_steps; got total_steps {total}, warmup_steps {warm}")
    return Schedule("warmup_cosine", lr, (("warmup_steps", warm), ("total_steps", total),
                                          ("min_lr", _min_lr(min_lr, lr))))
