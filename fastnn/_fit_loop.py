"""The epoch loop of ``fit``, shared by the compiled path and the reference: everything but the batches.

``run_fit`` validates fit's arguments (a ``FitOptions`` record), splits off validation data, draws
each epoch's sample order, asks a *session* to train one epoch, then evaluates, records history,
reports progress, applies early stopping and calls the callbacks. The session is the only part
that differs between ``fastnn.fit`` (one compiled call per epoch, on its own copies of params and
moments: ``fastnn/training.py``) and ``fastnn.reference.fit`` (a Python loop of
``reference.train_step``). Both draw the same orders from the same seed, so they take the same
steps and their results agree to rounding.

A session is made by ``make_session(net, opt, params, state, train, options)`` (``train`` a
``Dataset``, ``options`` the checked ``FitOptions``, its batch_size at most the training set) and
provides: ``epoch(order, n_batches, bar) -> mean loss`` (calling ``bar.report(batches done, their
mean loss)`` as it goes, as often as ``bar.live`` makes worthwhile), ``outputs(x2d)`` (the network's outputs),
``params_copy()`` and ``state_copy()`` (snapshots while training goes on), and ``result() ->
(params, state)`` at the end, which may hand over the session's own arrays.
"""

import math
import time
import warnings
from typing import NamedTuple

import numpy as np

from . import _checks
from .callbacks import History, Progress, monitor_for
from .data import batch_count, epoch_order, held_out_last, held_out_shuffled, split
from .losses import mean_loss
from .metrics import check_metrics, compute
from .optim import adam, check_optimizer, check_state, init_state


class FitOptions(NamedTuple):
    """``fit``'s arguments after (net, params, x, y), with its defaults."""

    loss: str = "mse"
    optimizer: object = None          # a fastnn Optimizer; None: adam()
    epochs: int = 10
    batch_size: int = 32
    seed: object = 0                  # int, numpy Generator or None
    shuffle: bool = True
    drop_last: bool = False
    validation_data: object = None    # (x_val, y_val) or None
    validation_split: float = 0.0
    early_stopping: object = None     # None, a patience or an EarlyStopping
    callbacks: object = ()            # a callable or a sequence of callables f(epoch, logs)
    metrics: object = ()              # a metric name or a sequence of names
    progress: object = None           # True, False or None (on when stderr is a terminal)
    state: object = None              # an optimizer state to continue from
    split: str = "last"               # how validation_split holds rows out: "last" or "shuffled"
    sample_weight: object = None      # one weight >= 0 per sample of x, or None
    bootstrap: bool = False           # train on a sample of the training rows drawn with replacement


class Dataset:
    """Checked arrays for the kernels: ``x`` (n, n_in), ``target`` or ``labels`` (the other None),
    and ``weights`` (n,) or None. ``xy`` is (x, y) or (x, y, sample weights)."""

    def __init__(self, net, xy, loss, dtype, what):
        x, y = _checks.check_dataset(*xy[:2], what)
        self.x, _ = _checks.check_input(net, x, dtype, what)
        self.target, self.labels = _checks.check_targets(loss, y, self.x.shape[0], net.sizes[-1], False, dtype)
        self.n = self.x.shape[0]
        weights = xy[2] if len(xy) > 2 else None
        what_weights = "sample_weight" if what == "x" else "validation sample_weight"
        self.weights = _checks.check_sample_weight(weights, self.n, dtype, what=what_weights)

    def without_zero_weights(self):
        """This dataset without its samples of weight 0, which add nothing to any loss or gradient."""
        if self.weights is None or self.weights.all():
            return self
        kept = self.weights > 0
        self.x, self.weights = self.x[kept], self.weights[kept]
        self.target = None if self.target is None else self.target[kept]
        self.labels = None if self.labels is None else self.labels[kept]
        self.n = self.x.shape[0]
        return self

    def resampled(self, rng):
        """This dataset's n samples drawn with replacement from it (a bootstrap sample), by ``rng``."""
        rows = rng.integers(0, self.n, size=self.n)
        self.x = self.x[rows]
        self.target, self.labels, self.weights = (None if a is None else a[rows]
                                                  for a in (self.target, self.labels, self.weights))
        return self


def _checked(options):
    """``options`` with every argument checked and normalised (the datasets aside)."""
    _checks.check_loss(options.loss)
    callbacks = (options.callbacks,) if callable(options.callbacks) else options.callbacks
    if not isinstance(callbacks, (tuple, list)) or not all(callable(c) for c in callbacks):
        raise TypeError("callbacks must be a callable or a list of callables f(epoch, logs)")
    if options.validation_data is not None and options.validation_split:
        raise ValueError("pass validation_data or validation_split, not both")
    if options.split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(map(repr, SPLITS))}; got {options.split!r}")
    if not isinstance(options.bootstrap, (bool, np.bool_)):
        raise TypeError(f"bootstrap must be True or False; got {type(options.bootstrap).__name__}")
    return options._replace(
        optimizer=adam() if options.optimizer is None else check_optimizer(options.optimizer),
        epochs=_checks.check_positive_int(options.epochs, "epochs"),
        batch_size=_checks.check_positive_int(options.batch_size, "batch_size"),
        metrics=check_metrics(options.metrics), callbacks=tuple(callbacks))


SPLITS = ("last", "shuffled")


def _datasets(net, x, y, options, dtype, rng):
    """(train, validation or None) as ``Dataset``s, ``validation_split`` held out as ``split`` says
    (the sample weights with their samples); the training samples of weight 0 left out."""
    x, y = _checks.check_dataset(x, y)
    weights = options.sample_weight
    if weights is not None:
        weights = _checks.check_sample_weight(weights, x.shape[0], dtype)
    validation = options.validation_data
    labels = options.loss == "softmax_cross_entropy" and y.ndim == 1
    if options.validation_split:
        if options.split == "shuffled":
            held = held_out_shuffled(y, options.validation_split, rng, stratify=labels)
        else:
            held = held_out_last(x.shape[0], options.validation_split)
        (x, y, weights), validation = split(held, x, y, weights)
        if options.split == "last" and labels and np.unique(validation[1]).size == 1 and np.unique(y).size > 1:
            warnings.warn(f"the last {options.validation_split:g} of the samples, held out for validation, hold "
                          f"only class {validation[1][0]}: the data look sorted. Pass split='shuffled' to "
                          "hold out a stratified random sample", UserWarning, stacklevel=4)
    train = Dataset(net, (x, y, weights), options.loss, dtype, "x").without_zero_weights()
    if validation is None:
        return train, None
    if not isinstance(validation, (tuple, list)) or len(validation) not in (2, 3):
        raise TypeError("validation_data must be a pair (x_val, y_val) or a triple (x_val, y_val, sample_weight)")
    return train, Dataset(net, validation, options.loss, dtype, "validation x")


def run_fit(make_session, net, params, x, y, options):
    """Train ``net`` from ``params`` on (x, y) with a session from ``make_session`` (see the module
    docstring); returns (params, history)."""
    params, dtype = _checks.check_params(net, params)
    options = _checked(options)
    rng = _checks.rng_from(options.seed, allow_none=True)
    train, val = _datasets(net, x, y, options, dtype, rng)
    if options.bootstrap:
        train = train.resampled(rng)
    n_batches = batch_count(train.n, options.batch_size, options.drop_last)
    if n_batches == 0:
        raise ValueError(f"drop_last with batch_size {options.batch_size} > {train.n} training samples "
                         "leaves no batch")
    opt = options.optimizer
    state = init_state(opt, params) if options.state is None else check_state(opt, params, options.state)
    monitor = monitor_for(options.early_stopping, val is not None, options.metrics)
    bar = Progress(options.progress, options.epochs, n_batches)
    session = make_session(net, opt, params, state, train, options._replace(batch_size=min(options.batch_size, train.n)))
    history = History()
    for epoch in range(1, options.epochs + 1):
        start = time.perf_counter()
        bar.start(epoch)
        mean = session.epoch(epoch_order(rng, train.n, options.shuffle), n_batches, bar)
        if not math.isfinite(mean):
            raise FloatingPointError(f"training loss became {mean} in epoch {epoch}; the model diverged. "
                                     "Try a lower learning rate, gradient clipping (clip_norm=) or scaled inputs")
        logs = {"loss": mean, **_evaluations(session, train, val, options)}
        logs["time"] = time.perf_counter() - start
        history.record(logs)
        bar.end(logs)
        stop = monitor is not None and monitor.update(epoch, logs, session)
        for callback in options.callbacks:
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


def _evaluations(session, train, val, options):
    """The epoch's metrics on the training set, and the loss and metrics on the validation set."""
    logs = {}
    for prefix, data in (("", train), ("val_", val)):
        if data is None or (prefix == "" and not options.metrics):
            continue
        out = session.outputs(data.x)
        if prefix:
            logs["val_loss"] = mean_loss(options.loss, out, data.target, data.labels, data.weights)
        for m in options.metrics:
            logs[prefix + m] = compute(m, options.loss, out, data.target, data.labels)
    return logs
