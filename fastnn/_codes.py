"""What the kernels take in place of names: codes, hyperparameter rows and per-Net arrays.

The public API speaks in names (activations, losses, optimizers); the kernels in small integers
and arrays. This module is the one translation between the two:

- ``ACTIVATION_CODES``, ``LOSS_CODES``, ``KERNEL_RULES``: name -> kernel code.
- ``hyperparameters`` / ``hyperparameter_table``: an optimizer's ``Rule`` (``fastnn.optim``)
  evaluated for given updates and laid out as ``kernels.optim.HP_NAMES`` says.
- ``used_moments`` / ``kernel_slots`` / ``state_with``: an optimizer state's used moments as the
  update kernel's slot tuples, and back.
- ``loss_inputs``: a loss, its checked targets and sample weights as the kernels' (code, target,
  labels, weights).
- Per-Net arrays kept on the frozen ``Net`` (``_kept_on``): its activation codes and the row
  kernel's layout.
"""

import numpy as np

from ._kernels import activations as _kact
from ._kernels import losses as _kloss
from ._kernels import network as _knet
from ._kernels import optim as _kopt

from ._buffers import empty_like_params
from .losses import LOSSES
from .net import ACTIVATIONS
from .optim import lr_values, rule
from .schedules import Schedule

ACTIVATION_CODES = {
    "identity": _kact.IDENTITY, "relu": _kact.RELU, "leaky_relu": _kact.LEAKY_RELU, "elu": _kact.ELU,
    "sigmoid": _kact.SIGMOID, "tanh": _kact.TANH, "softplus": _kact.SOFTPLUS, "gelu": _kact.GELU,
    "silu": _kact.SILU,
}
LOSS_CODES = {
    "mse": _kloss.MSE, "mae": _kloss.MAE, "huber": _kloss.HUBER,
    "sigmoid_cross_entropy": _kloss.SIGMOID_CE, "softmax_cross_entropy": _kloss.SOFTMAX_CE,
    "gaussian_nll": _kloss.GAUSSIAN_NLL,
}
KERNEL_RULES = _kopt.RULE_CODES
assert set(ACTIVATION_CODES) == set(ACTIVATIONS) and set(LOSS_CODES) == set(LOSSES)


# Optimizers

def _hp_index(kernel):
    """{hyperparameter name: index in hp} for the kernel rule named ``kernel``."""
    code = KERNEL_RULES[kernel]
    names = _kopt.HP_SHARED + _kopt.HP_NAMES[code]
    return {name: i for i, name in enumerate(names)}


HP_INDEX = {kernel: _hp_index(kernel) for kernel in KERNEL_RULES}


def kernel_code(opt):
    """The update kernel's code for a checked optimizer."""
    return KERNEL_RULES[rule(opt).kernel]


def hyperparameter_table(opt, count, n, dtype):
    """(n, HP_SIZE) array in ``dtype``: row s holds the hyperparameters of update count + s + 1."""
    counts = np.arange(count, count + n)
    r = rule(opt)
    index = HP_INDEX[r.kernel]
    table = np.zeros((n, _kopt.HP_SIZE))
    for name, value in r.hyperparameters(opt, lr_values(opt, counts), counts + 1.0).items():
        table[:, index[name]] = value
    return table.astype(dtype)


_HP_ROWS = 64  # updates whose hyperparameters are computed together (see hyperparameters)


def hyperparameters(opt, count, dtype):
    """The kernel's ``hp`` row for update number ``count`` + 1, in ``dtype``.

    With a constant lr or a built-in schedule the row comes from a table of the next 64 updates,
    built at once (``hyperparameter_table``, which ``fit`` uses too, so both take identical values)
    and kept on ``opt`` with its rows as a list: a step takes a list item (0.16 us a call, where
    taking a NumPy row view of the table each time took 0.36; float32, Emerald Rapids). A user's
    lr callable is only ever called for the update at hand, so it gets a one-row table.
    """
    kept = opt.__dict__.get("_hp_rows")  # (dtype, first count, rows); not a field
    if kept is not None and kept[0] is dtype and 0 <= count - kept[1] < _HP_ROWS:
        return kept[2][count - kept[1]]
    if callable(opt.lr) and not isinstance(opt.lr, Schedule):
        return hyperparameter_table(opt, count, 1, dtype)[0]
    rows = list(hyperparameter_table(opt, count, _HP_ROWS, dtype))
    opt.__dict__["_hp_rows"] = (dtype, count, rows)
    return rows[0]


def used_moments(state):
    """The moments the optimizer uses (the state's fields after count that are not None), in field
    order: the update kernel's slots (``kernels.optim.update_into``)."""
    return tuple([m for m in state[1:] if m is not None])


def kernel_slots(state):
    """(``used_moments(state)``, fresh arrays for the updated ones)."""
    slots_in = used_moments(state)
    return slots_in, tuple([empty_like_params(m) for m in slots_in])


_tuple_new = tuple.__new__


def state_with(state, count, slots):
    """A state like ``state`` with ``count`` and its used moments replaced by ``slots`` (in order)."""
    # tuple.__new__ (what NamedTuple._make calls) skips the generated __new__'s Python frame:
    # 0.73 -> 0.44 us for SGD's state.
    if len(slots) == len(state) - 1:  # every moment in use (Adam, SGD with momentum): 0.54 -> 0.2 us
        return _tuple_new(type(state), (count, *slots))
    if not slots:  # no moments: the fields after count are all None
        return _tuple_new(type(state), (count, *state[1:]))
    slots = iter(slots)
    return _tuple_new(type(state), [count] + [None if m is None else next(slots) for m in state[1:]])


# Losses

_NO_LABELS = np.empty(0, dtype=np.int64)


_TARGET_PLACEHOLDERS = {}


def target_placeholder(dtype):
    """The empty target matrix the kernels take when the targets are labels (one per dtype: it
    has no elements, so sharing it is safe)."""
    placeholder = _TARGET_PLACEHOLDERS.get(dtype)
    if placeholder is None:
        placeholder = _TARGET_PLACEHOLDERS[dtype] = np.empty((0, 0), dtype=dtype)
    return placeholder


_NO_WEIGHTS = {np.dtype(np.float32): np.empty(0, np.float32), np.dtype(np.float64): np.empty(0, np.float64)}


def no_weights(dtype):
    """The empty weights vector the kernels take for rows that are not weighted (shared, as empty)."""
    try:
        return _NO_WEIGHTS[dtype]
    except KeyError:  # a scalar type such as np.float64 rather than a dtype
        return _NO_WEIGHTS[np.dtype(dtype)]


_LABELS = "softmax_cross_entropy with labels"
# [fused][dtype][loss (or _LABELS)]: the kernel codes of the losses whose forms are ready
_READY_LOSS_CODES = ({}, {})


def loss_inputs(loss, target, labels, dtype, fused, weights=None):
    """(kernel loss code, target matrix, labels vector, weights vector), with empty placeholders
    for the unused one of target and labels and for ``weights`` None (checked sample weights of
    ``dtype`` otherwise); the loss's compiled forms made ready for ``dtype`` and for the fused
    kernels (``fused`` True) or the BLAS ones (False; ``kernels.losses.ensure_forms``): every
    kernel call that takes a loss code gets it from here."""
    if labels is not None:
        loss, target = _LABELS, target_placeholder(dtype)
    else:
        labels = _NO_LABELS
    if weights is None:
        weights = no_weights(dtype)
    try:  # one more dict lookup than LOSS_CODES[loss] once ready
        return _READY_LOSS_CODES[fused][dtype][loss], target, labels, weights
    except KeyError:
        code = _kloss.SOFTMAX_CE_LABELS if loss is _LABELS else LOSS_CODES[loss]
        _kloss.ensure_forms([code], dtype, fused)
        _READY_LOSS_CODES[fused].setdefault(np.dtype(dtype), {})[loss] = code
        return code, target, labels, weights


_int64 = np.dtype(np.int64)


def plain_loss_inputs(loss, y_true, dtype):
    """(labels, ``loss_inputs(..., fused=True)``) when y_true needs no conversion and the loss's
    forms are ready: int64 labels for softmax_cross_entropy (labels True), or a 2-D target of
    ``dtype``; else None, and the checked way converts, readies or says what is wrong. Types
    only: the kernels check the shapes and the labels' range themselves. The fast lanes' way to
    the loss inputs, one call where ``loss_inputs`` would be two."""
    try:
        if y_true.ndim == 2 and y_true.dtype is dtype:
            return False, (_READY_LOSS_CODES[True][dtype][loss], y_true, _NO_LABELS, _NO_WEIGHTS[dtype])
        if y_true.ndim == 1 and loss == "softmax_cross_entropy" and y_true.dtype is _int64:
            return True, (_READY_LOSS_CODES[True][dtype][_LABELS], _TARGET_PLACEHOLDERS[dtype], y_true,
                          _NO_WEIGHTS[dtype])
    except (KeyError, TypeError):  # not ready yet, or not a loss name
        pass
    return None


# Per-Net arrays

def _kept_on(net, name, make):
    """``make(net)``, computed once per Net and kept in its ``__dict__`` under ``name``.

    An attribute read is cheaper than a dict keyed on the Net, and such a dict would keep every
    Net alive. ``Net.__getstate__`` leaves these out of pickles.
    """
    value = net.__dict__.get(name)
    if value is None:
        value = make(net)
        object.__setattr__(net, name, value)
    return value


def activation_codes(net, dtype):
    """int64 array of the net's activation codes (kept on the Net; never handed out for writing),
    their compiled forms made ready for ``dtype`` (``kernels.activations.ensure_forms``, once per
    Net and dtype): every kernel call that takes the codes gets them from here or ``row_layout``."""
    codes = _kept_on(net, "_codes", _make_codes)
    ready = net.__dict__.get("_forms_ready", ())
    if dtype not in ready:
        _kact.ensure_forms(codes, dtype)
        object.__setattr__(net, "_forms_ready", frozenset(ready) | {np.dtype(dtype)})
    return codes


def _make_codes(net):
    return np.array([ACTIVATION_CODES[a] for a in net.activations], dtype=np.int64)


# Below this many weights in all, the one-sample row kernel keeps the GIL (kernels/_config.py,
# ROW_OPTIONS); larger nets release it, so that other threads run during their forward.
ROWS_GIL_MAX_WEIGHTS = 1 << 15


def row_layout(net, dtype):
    """(layout, n_out, kernel) for the row-by-row forward: layout is the int64 array
    [n_in, ..., n_out, code_1, ..., code_L] that ``forward_rows_checked_into`` takes; kernel is it,
    or its GIL-releasing twin for nets of ``ROWS_GIL_MAX_WEIGHTS`` weights or more. Kept on the Net
    (``_kept_on``), the activations' forms ready for ``dtype`` (``activation_codes``); ``forward``
    reads ``net._row_layout`` directly, once ``net._forms_ready`` holds x's dtype."""
    activation_codes(net, dtype)
    return _kept_on(net, "_row_layout", _make_row_layout)


def _make_row_layout(net):
    layout = np.array(net.sizes + tuple(_kept_on(net, "_codes", _make_codes)), dtype=np.int64)
    weights = sum(m * n for m, n in zip(net.sizes[:-1], net.sizes[1:]))
    small = weights < ROWS_GIL_MAX_WEIGHTS
    return layout, net.sizes[-1], (_knet.forward_rows_checked_into if small else _knet.forward_rows_checked_nogil_into)
