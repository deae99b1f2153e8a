"""The ``fit`` loop shared by the compiled path and the reference: everything but the batches.

``fit_function`` builds the public ``fit`` of each path around one loop that validates the
arguments, splits off validation data, draws each epoch's sample order, asks a *session* to train
one epoch, then evaluates, records history, reports progress, applies early stopping and calls the
callbacks. The session is the only part that differs between
``fastnn.fit`` (one compiled call per epoch, on its own copies of params and moments) and
``fastnn.reference.fit`` (a Python loop of ``reference.train_step``). Both draw the same orders
from the same seed, so they take the same steps and their results agree to rounding.

A session provides: ``epoch(order, n_batches, bar) -> mean loss`` (calling ``bar.report(batches done)``
as it goes, as often as ``bar.live`` makes worthwhile), ``evaluate(x2d, target, labels) -> (mean loss, outputs)``,
``params_copy()`` and ``state_copy()`` (snapshots while training goes on), and ``result() -> (params,
state)`` at the end, which may hand over the session's own arrays.
"""

import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import _checks
from .data import batch_count, check_dataset, epoch_order, split_last
from .metrics import HIGHER_IS_BETTER, check_metrics, compute
from .net import rng_from
from .optim import adam, check_optimizer, check_state, init_state

__all__ = ["EarlyStopping", "History"]


@dataclass(frozen=True)
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``monitor`` defaults to "val_loss" when there is validation data, else "loss"; metric names
    ("val_accuracy", "r2", ...) work too, and accuracy and r2 count as improving upwards. With
    ``restore_best`` (the default) ``fit`` returns the params and state of the best epoch.
    """

    patience: int = 5
    min_delta: float = 0.0
    monitor: str = None
    restore_best: bool = True

    def __post_init__(self):
        _checks.check_positive_int(self.patience, "EarlyStopping patience")
        _checks.check_nonnegative(self.min_delta, "EarlyStopping min_delta")
        if self.monitor is not None and not isinstance(self.monitor, str):
            raise TypeError(f"EarlyStopping monitor must be a history key such as 'val_loss'; got {self.monitor!r}")


class History(dict):
    """Per-epoch records of ``fit``: history["loss"], ["val_loss"], ["accuracy"], ["time"], ... lists.

    Attributes: ``epochs`` (epochs run), ``best_epoch`` (1-based, by the early-stopping monitor,
    or None), ``stopped_early`` (True when early stopping or a callback ended training) and
    ``state`` (the optimizer state that goes with the returned params: pass it back to ``fit`` as
    ``state=`` to continue training).
    """

    def __init__(self):
        super().__init__()
        self.epochs = 0
        self.best_epoch = None
        self.stopped_early = False
        self.state = None

    def record(self, logs):
        for key, value in logs.items():
            self.setdefault(key, []).append(value)
        self.epochs += 1


class _Dataset:
    """Checked arrays for the kernels: x2d, and target or labels (the other None)."""

    def __init__(self, net, x, y, loss, dtype, what):
        x, y = check_dataset(x, y, what)
        self.x, _ = _checks.check_input(net, x, dtype, what)
        self.target, self.labels = _checks.check_targets(loss, y, self.x.shape[0], net.sizes[-1], False, dtype)
        self.n = self.x.shape[0]


class _Monitor:
    """Early-stopping bookkeeping: best value so far, epochs since, and the best snapshot."""

    def __init__(self, rule, key):
        self.rule, self.key = rule, key
        self.sign = -1.0 if any(key.endswith(m) for m in HIGHER_IS_BETTER) else 1.0
        self.best = math.inf
        self.best_epoch = None
        self.snapshot = None
        self.waited = 0

    def update(self, epoch, logs, session):
        """Record epoch's value; True when patience has run out."""
        value = self.sign * logs[self.key]
        if value < self.best - self.rule.min_delta:
            self.best, self.best_epoch, self.waited = value, epoch, 0
            if self.rule.restore_best:
                self.snapshot = (session.params_copy(), session.state_copy())
            return False
        self.waited += 1
        return self.waited >= self.rule.patience


def _early_stopping(early_stopping, has_validation, metrics):
    if early_stopping is None or early_stopping is False:
        return None
    if _checks.is_int(early_stopping):
        early_stopping = EarlyStopping(patience=early_stopping)
    if not isinstance(early_stopping, EarlyStopping):
        raise TypeError("early_stopping must be None, a patience (int) or a fastnn.EarlyStopping; "
                        f"got {type(early_stopping).__name__}")
    key = early_stopping.monitor or ("val_loss" if has_validation else "loss")
    if key.startswith("val_") and not has_validation:
        raise ValueError(f"early stopping monitors {key!r} but fit has no validation data; "
                         "pass validation_data or validation_split")
    recorded = ("loss",) + metrics + (tuple("val_" + k for k in ("loss",) + metrics) if has_validation else ())
    if key not in recorded:
        raise ValueError(f"early stopping monitors {key!r}, which fit does not record; it records "
                         f"{', '.join(recorded)} (add metrics= to record more)")
    return _Monitor(early_stopping, key)


class _Progress:
    """Progress on stderr: a line per epoch; on a terminal also a bar that moves within the epoch."""

    WIDTH = 24

    def __init__(self, progress, epochs, n_batches):
        if progress is not None and not isinstance(progress, (bool, np.bool_)):
            raise TypeError(f"progress must be True, False or None (on when stderr is a terminal); got {progress!r}")
        stream = sys.stderr
        tty = bool(getattr(stream, "isatty", lambda: False)())
        self.on = tty if progress is None else bool(progress)
        self.live = self.on and tty
        self.epochs, self.n_batches, self.stream = epochs, n_batches, stream
        self.epoch = 0

    def start(self, epoch):
        self.epoch = epoch

    def report(self, done):
        if self.live:
            filled = self.WIDTH * done // self.n_batches
            bar = "=" * filled + ">" * (filled < self.WIDTH) + "." * (self.WIDTH - filled - 1)
            self.stream.write(f"\r{self._prefix()} [{bar}] {done}/{self.n_batches}")
            self.stream.flush()

    def end(self, logs):
        if self.on:
            stats = "  ".join(f"{k} {v:.4g}" if k != "time" else f"{v:.3f} s" for k, v in logs.items())
            # On a terminal, overwrite the bar ("\r") and clear what is left of it ("\x1b[K").
            lead, tail = ("\r", "\x1b[K") if self.live else ("", "")
            self.stream.write(f"{lead}{self._prefix()}  {stats}{tail}\n")
            self.stream.flush()

    def _prefix(self):
        width = len(str(self.epochs))
        return f"epoch {self.epoch:{width}d}/{self.epochs}"


def fit_function(make_session, module, doc):
    """A public ``fit`` that trains with sessions from ``make_session(net, opt, params, state, train,
    loss, batch_size, drop_last)``: one signature for both paths."""

    def fit(net, params, x, y, loss="mse", optimizer=None, epochs=10, batch_size=32, *, seed=0,
            shuffle=True, drop_last=False, validation_data=None, validation_split=0.0,
            early_stopping=None, callbacks=(), metrics=(), progress=None, state=None):
        return _run_fit(make_session, net, params, x, y, loss, optimizer, epochs, batch_size, seed,
                        shuffle, drop_last, validation_data, validation_split, early_stopping, callbacks,
                        metrics, progress, state)

    fit.__module__, fit.__doc__ = module, doc
    return fit


def _run_fit(make_session, net, params, x, y, loss, optimizer, epochs, batch_size, seed, shuffle,
             drop_last, validation_data, validation_split, early_stopping, callbacks, metrics, progress,
             state):
    params, dtype = _checks.check_params(net, params)
    _checks.check_loss(loss)
    opt = adam() if optimizer is None else check_optimizer(optimizer)
    epochs = _checks.check_positive_int(epochs, "epochs")
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    metrics = check_metrics(metrics)
    if callable(callbacks):
        callbacks = (callbacks,)
    if not isinstance(callbacks, (tuple, list)) or not all(callable(c) for c in callbacks):
        raise TypeError("callbacks must be a callable or a list of callables f(epoch, logs)")
    rng = rng_from(seed, allow_none=True)
    x, y = check_dataset(x, y)
    if validation_data is not None and validation_split:
        raise ValueError("pass validation_data or validation_split, not both")
    if validation_split:
        (x, y), validation_data = split_last(x, y, validation_split)
    train = _Dataset(net, x, y, loss, dtype, "x")
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise TypeError("validation_data must be a pair (x_val, y_val)")
        val = _Dataset(net, *validation_data, loss, dtype, "validation x")
    n_batches = batch_count(train.n, batch_size, drop_last)
    if n_batches == 0:
        raise ValueError(f"drop_last with batch_size {batch_size} > {train.n} training samples leaves no batch")
    state = init_state(opt, params) if state is None else check_state(opt, params, state)
    monitor = _early_stopping(early_stopping, val is not None, metrics)
    bar = _Progress(progress, epochs, n_batches)

    session = make_session(net, opt, params, state, train, loss, min(batch_size, train.n), drop_last)
    history = History()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        bar.start(epoch)
        mean = session.epoch(epoch_order(rng, train.n, shuffle), n_batches, bar)
        if not math.isfinite(mean):
            raise FloatingPointError(f"training loss became {mean} in epoch {epoch}; the model diverged. "
                                     "Try a lower learning rate, gradient clipping (clip_norm=) or scaled inputs")
        logs = {"loss": mean}
        for name, data in (("", train), ("val_", val)):
            if data is None or (name == "" and not metrics):
                continue
            value, out = session.evaluate(data.x, data.target, data.labels)
            if name:
                logs["val_loss"] = value
            for m in metrics:
                logs[name + m] = compute(m, loss, out, data.target, data.labels)
        logs["time"] = time.perf_counter() - start
        history.record(logs)
        bar.end(logs)
        stop = monitor is not None and monitor.update(epoch, logs, session)
        for callback in callbacks:
            stop = (callback(epoch, dict(logs)) is True) or stop
        if stop:
            history.stopped_early = True
            break
    if monitor is not None:
        history.best_epoch = monitor.best_epoch
    if monitor is not None and monitor.snapshot is not None:
        params, history.state = monitor.snapshot
    else:
        params, history.state = session.result()
    return params, history
