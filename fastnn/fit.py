"""fit: mini-batch training for many epochs, with one compiled call per epoch.

The epoch loop (gathering each shuffled batch, forward, loss, backward, optimizer update, loss
accumulation) runs inside ``kernels.network.train_batches``; Python only draws the epoch's
sample order, precomputes the epoch's hyperparameter table (scheduled learning rates, bias
corrections) and does the per-epoch bookkeeping in ``fastnn.training``. The kernel writes params
and optimizer moments into two private sets it alternates between (the caller's are copied into
the first): ``fit`` never writes into what the caller passed.
"""

import numpy as np

from kernels import network as _knet

from .model import (activation_codes, block_buffers, copy_params, empty_like_params, loss_inputs,
                    loss_value, outputs_into, target_placeholder, zeros_like_params)
from .optim import _KERNEL_CODES, hyperparameter_table, kernel_slots, state_with
from .training import fit_function

__all__ = ["fit"]


class _CompiledSession:
    """Owns private copies of params and moments, and the batch workspaces, for one fit."""

    # On a terminal the epoch runs in this many compiled calls, so the progress bar moves.
    LIVE_CHUNKS = 20

    def __init__(self, net, opt, params, state, train, loss, batch_size, drop_last):
        dtype = params[0][0].dtype
        self.net, self.opt, self.loss = net, opt, loss
        self.params = copy_params(params)
        self.state = state
        moments, spare_slots = kernel_slots(state)
        self.slots = tuple(copy_params(m) for m in moments)  # own copies: the kernel writes them
        # The kernel alternates between these and a spare set (see train_batches).
        self.spare = (empty_like_params(params), spare_slots)
        self.code, target, labels = loss_inputs(loss, train.target, train.labels, dtype)
        self.data = (train.x, target, labels)
        rows_last = train.n % batch_size if not drop_last else 0
        self.works = (self._workspace(batch_size), self._workspace(rows_last))
        self.grads = zeros_like_params(params)
        self.count = state.count
        self.codes = activation_codes(net)

    def _workspace(self, rows):
        """(xb, tb, lb, zs, acts, deltas) for batches of ``rows`` samples."""
        x, target, labels = self.data
        dtype = x.dtype
        tb = np.empty((rows, target.shape[1]), dtype) if target.size else target_placeholder(dtype)
        lb = np.empty(rows, np.int64) if labels.size else labels
        return (np.empty((rows, x.shape[1]), dtype), tb, lb) + block_buffers(self.net, rows, dtype)

    def epoch(self, order, n_batches, bar):
        hps = hyperparameter_table(self.opt, self.count, n_batches, self.data[0].dtype)
        chunk = -(-n_batches // self.LIVE_CHUNKS) if bar.live else n_batches
        total, seen = 0.0, 0
        for first in range(0, n_batches, chunk):
            current = (self.params, self.slots)
            part, rows, steps = _knet.train_batches(
                current, self.spare, self.codes, self.code, self.data, order, first, hps[first:first + chunk],
                self.works, self.grads, _KERNEL_CODES[self.opt.name])
            if steps % 2:  # the newest values are in the spare set
                (self.params, self.slots), self.spare = self.spare, current
            total += part
            seen += rows
            bar.report(min(first + chunk, n_batches))
            if not np.isfinite(part):
                break
        self.count += n_batches
        return total / seen

    def evaluate(self, x2d, target, labels):
        out = outputs_into(self.net, self.params, x2d, 4096)
        return loss_value(self.loss, out, target, labels), out

    def params_copy(self):
        return copy_params(self.params)

    def state_copy(self):
        return state_with(self.state, self.count, [copy_params(s) for s in self.slots])

    def result(self):
        # The session's own arrays, not copies: made for this fit, they go to the caller at the end.
        return self.params, state_with(self.state, self.count, list(self.slots))


_FIT_DOC = """Train for ``epochs`` passes over (x, y) in mini-batches; returns (params, history).

    - ``optimizer``: a fastnn optimizer (default ``adam()``, lr 1e-3); its ``lr`` may be a schedule
      (``fastnn.schedules``), counted in updates. ``state``: an optimizer state to continue from
      (``history.state`` of an earlier fit); default a fresh ``init_state``.
    - Each epoch visits every sample once, in an order drawn from ``seed`` (or in order when
      ``shuffle`` is False); the last batch is shorter unless ``drop_last``. Same inputs and seed,
      same result: fit is pure and never writes into its arguments.
    - ``validation_data=(x_val, y_val)``, or ``validation_split`` = the fraction of the last samples
      held out (before shuffling): the validation loss (and metrics) are recorded after each epoch.
    - ``metrics``: names from ``fastnn.metrics.METRICS`` (accuracy, mae, r2), computed after each
      epoch over the training set (and the validation set as "val_" + name).
    - ``early_stopping``: a patience (int) or ``fastnn.EarlyStopping``; by default the best
      epoch's params are returned.
    - ``callbacks``: callables ``f(epoch, logs)`` (1-based epoch, a dict of this epoch's values)
      called after every epoch; one that returns True stops training.
    - ``progress``: per-epoch lines (and a live bar on a terminal) on stderr; None shows them when
      stderr is a terminal.

    A loss that becomes NaN or infinite raises ``FloatingPointError`` naming the epoch.
    ``history`` is a ``fastnn.History``: lists per key ("loss", "val_loss", metrics, "time").
    """

fit = fit_function(_CompiledSession, __name__, _FIT_DOC)
