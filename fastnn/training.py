"""The compiled updates: ``step`` (the optimizer alone), ``train_step`` (one fused step on a batch)
and ``fit`` (many epochs, one compiled call per epoch).

``step`` and ``train_step`` validate, then make one compiled call: the update kernel, or forward +
loss + backward + update together, writing into fresh outputs. ``fit`` runs the epoch loop of
``fastnn/_fit_loop.py`` with a session whose epoch (gathering each shuffled batch, forward, loss,
backward, update, loss accounting) runs inside ``kernels.network.train_batches``; Python only
draws the epoch's sample order and precomputes its hyperparameter table (scheduled learning rates,
bias corrections). A fused net's batches large enough to split over two threads
(``fastnn/_threads.py``) are stepped one by one from Python instead, as ``train_step`` takes them.
None of them writes into what the caller passed.
"""

from threading import get_ident as _get_ident
from typing import NamedTuple

import numpy as np

from ._kernels import fused as _kfused
from ._kernels import network as _knet
from ._kernels._config import call_compiling
from ._kernels import optim as _kopt

from . import _checks, _threads, stacked
from ._entry import PLAIN_FLAGS, entry_point
from ._buffers import block_buffers, copy_params, empty_like_params, fused_step_sets, workspace, zeros_like_params
from ._codes import (activation_codes, hyperparameter_table, hyperparameters, kernel_code, kernel_slots,
                     loss_inputs, plain_loss_inputs, row_layout, state_with, target_placeholder, used_moments)
from ._fit_loop import FitOptions, run_fit
from .ensemble import fit_members, is_stacked
from .network import checked_fused_grad, fused, outputs_into, prepare_batch
from .optim import Optimizer, check_optimizer, check_state, moments_used, rule

__all__ = ["step", "train_step", "fit"]


def _prepare_update(opt, params, state):
    """(checked state, (kernel code, hp, slots), fresh slots for the updated moments) for one update."""
    state = check_state(opt, params, state)
    hp = hyperparameters(opt, state.count, params[0][0].dtype)
    slots_in, slots_out = kernel_slots(state)
    return state, (kernel_code(opt), hp, slots_in), slots_out


def step(opt, params, grads, state):
    """One optimizer update: returns (new params, new state). Arguments are left untouched.
    Stacked params (an ensemble) are updated in one compiled call, gradient clipping per member."""
    if is_stacked(params):
        return stacked.step(opt, params, grads, state, _prepare_update)
    check_optimizer(opt)
    params, _ = _checks.check_param_pairs(params)
    grads = _checks.check_like(params, grads, "grads")
    state, (code, hp, slots_in), slots_out = _prepare_update(opt, params, state)
    params_out = empty_like_params(params)
    _kopt.update_into(code, hp, params, grads, slots_in, params_out, slots_out)
    return params_out, state_with(state, state.count + 1, slots_out)


def train_step(net, opt, params, state, x, y_true, loss="mse", sample_weight=None):
    """(new params, new state, loss) after one update on the batch (x, y_true).

    ``loss`` is the mean loss at the params passed in (before the update), as a Python float;
    with ``sample_weight`` the weighted mean, as ``grad`` defines it.
    Equivalent to ``grad`` followed by ``step``, without materialising anything in between.
    An empty batch still takes an update with zero gradients (and advances ``state.count``).
    On a small net (fused kernels), a batch of ``_threads.SPLIT_MIN_WORK`` multiply-adds or more
    (rows x weights) is split over two threads when ``get_num_threads()["numba"]`` is 2 or more.

    Stacked params (an ensemble) step every member in one compiled call and give losses (K,);
    x, y_true and sample_weight are every member's or each member's own behind a leading K axis
    (``fastnn.ensemble.member_batches``).
    """
    if sample_weight is None:
        result = _fused_step_unchecked(net, opt, params, state, x, y_true, loss)
        if result is not None:
            return result
    if is_stacked(params):
        return stacked.train_step(net, opt, params, state, x, y_true, loss, sample_weight)
    check_optimizer(opt)
    on_fused = fused(net)
    params, dtype, x2d, loss_in = prepare_batch(net, params, x, y_true, loss, on_fused, sample_weight)
    if on_fused:
        return _fused_step_checked(net, opt, params, state, x2d, loss_in)
    state, update, slots_out = _prepare_update(opt, params, state)
    params_out = empty_like_params(params)
    buffers, grads = workspace(net, params, x2d.shape[0], dtype)
    value = _knet.train_step_into(params, activation_codes(net, dtype), x2d, loss_in, buffers, grads, update,
                                  (params_out, slots_out))
    return params_out, state_with(state, state.count + 1, slots_out), float(value)


def _fused_step_checked(net, opt, params, state, x2d, loss_in):
    """train_step on a fused net once the arguments are checked: params and moments packed into
    one buffer (``PackedSets.pack``), then the packed step, compiled for these types here
    (``call_compiling``) so the fast lane can call it; or, for a batch ``_threads.splits``, the
    gradient on two threads and the packed update from its halves."""
    state = check_state(opt, params, state)
    dtype = x2d.dtype
    slots_in = used_moments(state)
    sets = fused_step_sets(net, dtype, len(slots_in))
    layout, packing = row_layout(net, dtype)[0], sets.layout.packing
    packed = sets.packed(params, slots_in)  # the results of a step before, as the fast lane finds them
    if packed is None:
        packed = sets.layout.pack((params,) + slots_in)
    if packed is None:  # checked arguments always pack
        raise RuntimeError("fastnn: the fused train step could not pack checked arguments")
    packed_out, (params_out, slots_out) = sets.take()
    update = (kernel_code(opt), hyperparameters(opt, state.count, dtype))
    if _threads.splits(net, x2d.shape[0]):
        value, grads, grads_2, weights = _threads.split_grad(net, params, x2d, loss_in)
        fits = call_compiling(_kfused.halves_update_packed_into, packing, packed, layout, grads, grads_2, weights,
                              update, packed_out)
    else:
        fits, value = call_compiling(_fused_step, packing, packed, layout, x2d, loss_in,
                                     update, packed_out)
        _fused_step_compiled.add(True)
    if not fits:  # the checks above passed: the kernel's own must too
        raise RuntimeError("fastnn: the fused train step rejected checked arguments")
    return params_out, state_with(state, state.count + 1, slots_out), float(value)


_ndarray = np.ndarray
_fused_step = _kfused.fused_train_step_packed_into
_fused_step_compiled = set()  # non-empty once call_compiling has compiled the fused step


def _lane(opt):
    """(state type, moments used, kernel code) of a checked optimizer, kept on it."""
    lane = opt.__dict__.get("_lane")
    if lane is None:
        lane = opt.__dict__["_lane"] = (rule(opt).state, moments_used(opt), kernel_code(opt))
    return lane


def _fused_step_unchecked(net, opt, params, state, x, y_true, loss):
    """train_step's result through ``kernels.fused.fused_train_step_packed_into`` without the
    Python checks, or None: then ``train_step`` takes the checked way, which says what is wrong.

    Only the cheap, type-level facts are screened here (arrays of the params' dtype; 2-D x and
    targets or int64 labels; the optimizer's own state type with the moments its settings use);
    the kernel checks every shape and label itself, and its call the exact argument types
    (``call_compiling``: a strided or read-only array is another Numba type, which the call
    rejects), before it computes anything. Params and moments that are the previous step's
    results are found in their packed buffer (``FusedStepSets.packed``); others are packed first
    (``PackedSets.pack``). The checked way costs ~25 us a step more on a three-layer net, as
    long as the whole fused step of the tiny one.

    The step of a training loop, on the results of the step before in the same thread with the
    same optimizer, is known by identity (``_LastStep``): the tests of params, state and
    optimizer are skipped (tiny net, SGD: 4.8 -> ~4.1 us of Python a step).
    """
    if type(x) is not _ndarray or type(y_true) is not _ndarray:
        return None
    # The row count first: it is the cheap test, and it rules out every small batch.
    if x.ndim and x.shape[0] >= _threads.SPLIT_MIN_ROWS and _threads.splits(net, x.shape[0]):
        return None
    last = net.__dict__.get("_last_step")
    thread = _get_ident()
    try:
        known = False
        if last is not None:  # one unpacking: 0.15 us less than reading the fields by name
            last_opt, last_params, last_state, sets, packed, opt_code, last_thread = last
            known = state is last_state and params is last_params and opt is last_opt and last_thread == thread
        if known:
            count = state[0]
            dtype = sets.layout.dtype
        else:
            if not _fused_step_compiled or not fused(net) or type(opt) is not Optimizer:
                return None
            state_type, used, opt_code = _lane(opt)
            if type(state) is not state_type:
                return None
            dtype = params[0][0].dtype
            if dtype not in net._forms_ready:  # the activations' forms (_codes.activation_codes)
                return None
            count, *moments = state
            if type(count) is not int or count < 0 or tuple([m is not None for m in moments]) != used:
                return None
            slots_in = tuple([m for m in moments if m is not None])
            sets = fused_step_sets(net, dtype, len(slots_in))
            packed = sets.packed(params, slots_in)
            if packed is None:
                packed = sets.layout.pack((params,) + slots_in)
                if packed is None:
                    return None
        if x.dtype is not dtype or x.ndim != 2:
            return None
        screened = plain_loss_inputs(loss, y_true, dtype)
        if screened is None:
            return None
        labels, loss_in = screened
        packed_out, (params_out, slots_out) = sets.take()
        args = (sets.layout.packing, packed, net._row_layout[0], x, loss_in,
                (opt_code, hyperparameters(opt, count, dtype)), packed_out)
        # With x and the targets plain arrays, the argument types are fixed by the sets (net,
        # dtype, moments) and whether the targets are labels: the kernel's entry point for them
        # (``_entry``) runs the step without Numba typing the arguments again.
        plain = (x.flags.num & PLAIN_FLAGS) == PLAIN_FLAGS and (y_true.flags.num & PLAIN_FLAGS) == PLAIN_FLAGS
        entry = sets.entries.get(labels) if plain else None
        if entry is not None:
            fits, value = entry(*args)
        else:
            fits, value = _fused_step(*args)
            if plain:  # the first such step: its entry point serves the next ones
                sets.entries[labels] = entry_point(_fused_step, args)
    except Exception:  # anything odd (a TypeError from the call for unexpected types): the checked way
        return None
    if not fits:
        return None
    state_out = state_with(state, count + 1, slots_out)
    # A plain tuple (0.15 us less than tuple.__new__ of a _LastStep), into the Net's __dict__,
    # not through object.__setattr__ (93 -> 32 ns).
    net.__dict__["_last_step"] = (opt, params_out, state_out, sets, packed_out, opt_code, thread)
    return params_out, state_out, value


class _LastStep(NamedTuple):
    """The results of a net's last fused step, and what the next step on them needs: kept on the
    Net as a plain tuple of these fields in this order (``_LastStep._make`` names them; one per
    Net, for the thread that made it; its own references count in the buffers' reference counts,
    so take() leaves this buffer alone while the record holds it)."""

    opt: Optimizer
    params: tuple
    state: tuple
    sets: object  # the FusedStepSets of params' dtype (sets.layout.dtype)
    packed: np.ndarray
    opt_code: int
    thread: int


def fit(net, params, x, y, loss="mse", optimizer=None, epochs=10, batch_size=32, *, seed=0, shuffle=True,
        drop_last=False, validation_data=None, validation_split=0.0, early_stopping=None, callbacks=(),
        metrics=(), progress=None, state=None, split="last", sample_weight=None, bootstrap=False):
    """Train for ``epochs`` passes over (x, y) in mini-batches; returns (params, history).

    - ``optimizer``: a fastnn optimizer (default ``adam()``, lr 1e-3); its ``lr`` may be a schedule
      (``fastnn.schedules``), counted in updates. ``state``: an optimizer state to continue from
      (``history.state`` of an earlier fit); default a fresh ``init_state``.
    - Each epoch visits every sample once, in an order drawn from ``seed`` (or in order when
      ``shuffle`` is False); the last batch is shorter unless ``drop_last``. Same inputs and seed,
      same result: fit is pure and never writes into its arguments.
    - ``validation_data=(x_val, y_val)``, or ``validation_split`` = the fraction of the samples
      held out: the last ones (``split="last"``, before shuffling, as Keras does; a warning when
      they hold a single class of labels) or a random draw from ``seed`` (``split="shuffled"``,
      stratified for labels). The validation loss (and metrics) are recorded after each epoch.
    - ``metrics``: names from ``fastnn.metrics.METRICS`` (accuracy, mae, r2), computed after each
      epoch over the training set (and the validation set as "val_" + name).
    - ``early_stopping``: a patience (int) or ``fastnn.EarlyStopping``; by default the best
      epoch's params are returned.
    - ``callbacks``: callables ``f(epoch, logs)`` (1-based epoch, a dict of this epoch's values)
      called after every epoch; one that returns True stops training.
    - ``progress``: per-epoch lines (and a live bar on a terminal) on stderr; None shows them when
      stderr is a terminal.
    - ``sample_weight``: one weight >= 0 per sample; each batch's loss is its weighted mean
      (``grad``), as are the epoch's and the validation loss (``validation_data`` may carry a third
      array of weights; a split holds weights out with their samples). Training samples of weight
      0 are left out of the batches.
    - ``bootstrap``: train on n rows drawn with replacement from the n training rows (after any
      validation split), drawn from ``seed``.
    - Stacked params (an ensemble): each member is fitted in turn (``ensemble.fit_members``) with
      the k-th of ``member_seeds(seed, K)``, so with ``bootstrap`` each draws its own sample and
      batch order, and each stops early on its own; returns (stacked params, [each member's
      History]).

    A loss that becomes NaN or infinite raises ``FloatingPointError`` naming the epoch.
    ``history`` is a ``fastnn.History``: lists per key ("loss", "val_loss", metrics, "time").
    """
    options = FitOptions(loss, optimizer, epochs, batch_size, seed, shuffle, drop_last, validation_data,
                         validation_split, early_stopping, callbacks, metrics, progress, state, split, sample_weight,
                         bootstrap)
    if is_stacked(params):
        return fit_members(fit, net, params, x, y, options._asdict())
    return run_fit(_CompiledSession, net, params, x, y, options)


class _CompiledSession:
    """Owns private copies of params and moments, and the batch workspaces, for one fit."""

    # On a terminal the epoch runs in this many compiled calls, so the progress bar moves.
    LIVE_CHUNKS = 20

    def __init__(self, net, opt, params, state, train, options):
        dtype = params[0][0].dtype
        self.net, self.opt = net, opt
        self.params = copy_params(params)
        self.state = state
        moments, spare_slots = kernel_slots(state)
        self.slots = tuple(copy_params(m) for m in moments)  # own copies: the kernel writes them
        # The kernel alternates between these and a spare set (see train_batches).
        self.spare = (empty_like_params(params), spare_slots)
        on_fused = fused(net)
        self.data = (train.x, loss_inputs(options.loss, train.target, train.labels, dtype, on_fused, train.weights))
        rows_last = train.n % options.batch_size if not options.drop_last else 0
        self.works = (self._workspace(options.batch_size), self._workspace(rows_last))
        self.grads = zeros_like_params(params)
        self.count = state.count
        self.codes = activation_codes(net, dtype)
        self.opt_code = kernel_code(opt)
        self.kernel = _kfused.fused_train_batches if on_fused else _knet.train_batches
        self.batch_size = options.batch_size
        self.split = on_fused and _threads.splits(net, options.batch_size)

    def _workspace(self, rows):
        """(xb, tb, lb, wb, zs, acts, deltas) for batches of ``rows`` samples."""
        x, (_, target, labels, weights) = self.data
        dtype = x.dtype
        tb = np.empty((rows, target.shape[1]), dtype) if target.size else target_placeholder(dtype)
        lb = np.empty(rows, np.int64) if labels.size else labels
        wb = np.empty(rows, dtype) if weights.size else weights
        # The fused kernels keep their own workspace: their layer buffers have no rows.
        layer_rows = 0 if fused(self.net) else rows
        return (np.empty((rows, x.shape[1]), dtype), tb, lb, wb) + block_buffers(self.net, layer_rows, dtype)

    def epoch(self, order, n_batches, bar):
        hps = hyperparameter_table(self.opt, self.count, n_batches, self.data[0].dtype)
        if self.split:
            return self._split_epoch(order, n_batches, hps, bar)
        chunk = -(-n_batches // self.LIVE_CHUNKS) if bar.live else n_batches
        total, seen = 0.0, 0
        for first in range(0, n_batches, chunk):
            current = (self.params, self.slots)
            part, rows, steps = self.kernel((current, self.spare), self.codes, self.data,
                                            (order, first, hps[first:first + chunk]), self.works, self.grads,
                                            self.opt_code)
            if steps % 2:  # the newest values are in the spare set
                (self.params, self.slots), self.spare = self.spare, current
            total += part
            seen += rows
            bar.report(min(first + chunk, n_batches), total / seen if seen else None)
            if not np.isfinite(part):
                break
        self.count += n_batches
        return total / seen if seen else 0.0

    def _split_epoch(self, order, n_batches, hps, bar):
        """The epoch as train_step would take it batch by batch, a batch that ``_threads.splits``
        on two threads (the short last one may not): the same bits as that loop."""
        x, (code, target, labels, weights) = self.data
        size = self.batch_size
        total, seen = 0.0, 0
        grad_sets = fused_step_sets(self.net, x.dtype, 0, "grad").layout
        grads_flat, (whole_grads,) = grad_sets.new()  # for the batches that do not split
        for s in range(n_batches):
            rows = order[s * size:(s + 1) * size]
            loss_in = tuple([code] + [a[rows] if a.size else a for a in (target, labels, weights)])
            if _threads.splits(self.net, rows.shape[0]):
                value, grads = _threads.whole_grad(self.net, self.params, x[rows], loss_in)
            else:
                grads = whole_grads
                value = checked_fused_grad(self.net, self.params, x[rows], loss_in, grads_flat, grad_sets.packing)
            current = (self.params, self.slots)
            _kopt.update_small_into(self.opt_code, hps[s], self.params, grads, self.slots, *self.spare)
            (self.params, self.slots), self.spare = self.spare, current
            count = float(loss_in[3].sum(dtype=np.float64)) if weights.size else rows.shape[0]
            total += value * count
            seen += count
            bar.report(s + 1, total / seen)
            if not np.isfinite(value):
                break
        self.count += n_batches
        return total / seen

    def outputs(self, x2d):
        return outputs_into(self.net, self.params, x2d, 4096)

    def params_copy(self):
        return copy_params(self.params)

    def state_copy(self):
        return state_with(self.state, self.count, [copy_params(s) for s in self.slots])

    def result(self):
        # The session's own arrays, not copies: made for this fit, they go to the caller at the end.
        return self.params, state_with(self.state, self.count, list(self.slots))
