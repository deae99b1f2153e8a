"""Callbacks of ``fit``: early stopping, the per-epoch history, and progress on the terminal.

``EarlyStopping`` and ``History`` are public (``fnn.EarlyStopping``, ``fnn.History``). ``Monitor``
does the early-stopping bookkeeping for one fit; ``Progress`` writes a line per epoch to stderr and,
on a terminal, a bar that moves within the epoch. User callbacks are plain callables
``f(epoch, logs)``, called by the epoch loop (``fastnn/_fit_loop.py``).
"""

import math
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import _checks
from .metrics import HIGHER_IS_BETTER

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


class Monitor:
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


def monitor_for(early_stopping, has_validation, metrics):
    """A ``Monitor`` for fit's ``early_stopping`` argument (None, False, a patience or an
    ``EarlyStopping``), or None; checks that the monitored key is one fit records."""
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
    return Monitor(early_stopping, key)


class Progress:
    """Progress on stderr: a line per epoch; on a terminal also a bar that moves within the epoch,
    with the epoch's running loss, the time since fit started and an estimate of the time left
    (for every epoch asked for: early stopping may end sooner)."""

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
        self.started = time.perf_counter()

    def start(self, epoch):
        self.epoch = epoch

    def report(self, done, loss=None):
        """``done`` batches of this epoch are trained, with mean loss ``loss`` over them so far."""
        if self.live:
            filled = self.WIDTH * done // self.n_batches
            bar = "=" * filled + ">" * (filled < self.WIDTH) + "." * (self.WIDTH - filled - 1)
            running = "" if loss is None else f"  loss {loss:.4g}"
            self.stream.write(f"\r{self._prefix()} [{bar}] {done}/{self.n_batches}{running}  "
                              f"{self._times((self.epoch - 1) * self.n_batches + done)}\x1b[K")
            self.stream.flush()

    def _times(self, batches_done):
        """"elapsed E, ETA R" after batches_done of all epochs' batches."""
        elapsed = time.perf_counter() - self.started
        total = self.epochs * self.n_batches
        left = elapsed * (total - batches_done) / batches_done if batches_done else math.nan
        return f"{_duration(elapsed)} elapsed, ETA {_duration(left)}"

    def end(self, logs):
        if self.on:
            stats = "  ".join(f"{k} {v:.4g}" if k != "time" else f"{v:.3f} s" for k, v in logs.items())
            # On a terminal, overwrite the bar ("\r") and clear what is left of it ("\x1b[K").
            lead, tail = ("\r", "\x1b[K") if self.live else ("", "")
            times = self._times(self.epoch * self.n_batches)
            self.stream.write(f"{lead}{self._prefix()}  {stats}  ({times}){tail}\n")
            self.stream.flush()

    def _prefix(self):
        width = len(str(self.epochs))
        return f"epoch {self.epoch:{width}d}/{self.epochs}"


def _duration(seconds):
    """Seconds as "4.2s", "3m07s" or "1h02m"; "?" when not known."""
    if not math.isfinite(seconds):
        return "?"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"
