"""Ensembles as stacked params, and helpers over whole parameter tuples.

An ensemble of K networks of one ``Net`` is the usual params tuple whose arrays carry a leading
member axis: W (K, fan_in, fan_out), b (K, fan_out). ``init(net, seed, members=K)`` makes one
(member k is ``init(net, seed=member_seeds(seed, K)[k])``), ``member`` takes one network out and
``stack`` puts networks together (``fastnn.target.polyak`` updates a target network, stacked or
not). Kernel-free, so that ``fastnn.reference`` shares it: which arrays of a batch are each
member's own (``member_batches``), the reference's member-by-member outputs (``member_outputs``),
a member's optimizer state (``member_state``) and ``fit`` of stacked params member by member
(``fit_members``). The compiled path's one call over all members is ``fastnn.stacked``;
``fastnn.uncertainty.ensemble_predict`` sums an ensemble's outputs up as a mean and a predictive
variance.
"""

import numpy as np

from . import _checks
from .net import member_seeds

__all__ = ["member_seeds", "member", "stack", "members_of", "polyak"]


def is_stacked(params):
    """True when params' first W has a leading member axis (an ensemble's; ``members_of`` checks
    the rest). Every public function asks this of its params: an ndarray's ndim is read directly."""
    try:
        W = params[0][0]
        return (W.ndim if type(W) is _ndarray else np.ndim(W)) == 3
    except (TypeError, IndexError, KeyError, ValueError):
        return False


_ndarray = np.ndarray


def members_of(params, what="params"):
    """K for stacked params (every W (K, fan_in, fan_out), every b (K, fan_out)), None for a plain
    params tuple; ValueError or TypeError for anything else, saying what was expected."""
    count = _plain_count(params)
    if count is not None:
        return count or None
    if not isinstance(params, (tuple, list)) or not params:
        raise TypeError(f"{what} must be a non-empty tuple of (W, b) pairs; got {type(params).__name__}")
    ranks, counts = set(), set()
    for l, pair in enumerate(params):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"{what}[{l}] must be a (W, b) pair; got {type(pair).__name__}")
        W, b = (np.asarray(a) for a in pair)
        if W.ndim not in (2, 3) or b.ndim != W.ndim - 1:
            raise ValueError(f"{what}[{l}] must be W (fan_in, fan_out) and b (fan_out,), or stacked W (K, fan_in, "
                             f"fan_out) and b (K, fan_out); got shapes {W.shape} and {b.shape}")
        ranks.add(W.ndim)
        if W.ndim == 3:
            counts.update((W.shape[0], b.shape[0]))
    if len(ranks) > 1 or len(counts) > 1:
        raise ValueError(f"{what} mixes stacked and plain layers, or members counts {sorted(counts)}; "
                         "every layer needs the same leading member axis")
    return counts.pop() if counts else None


def _plain_count(params):
    """members_of for a tuple of (W, b) tuples of ndarrays (K, or 0 for plain params), without
    converting anything; None for anything else, which members_of then looks at closely."""
    if type(params) is not tuple or not params or type(params[0]) is not tuple or len(params[0]) != 2:
        return None
    W0 = params[0][0]
    if type(W0) is not _ndarray or W0.ndim not in (2, 3):
        return None
    rank, count = W0.ndim, W0.shape[0]
    for pair in params:
        if type(pair) is not tuple or len(pair) != 2:
            return None
        W, b = pair
        if (type(W) is not _ndarray or type(b) is not _ndarray or W.ndim != rank or b.ndim != rank - 1
                or (rank == 3 and (W.shape[0] != count or b.shape[0] != count))):
            return None
    return count if rank == 3 else 0


def member(params, k):
    """Member ``k`` of stacked params, as a plain params tuple (views into the stacked arrays)."""
    count = members_of(params)
    if count is None:
        raise ValueError("member takes stacked params (W (K, fan_in, fan_out)); got a plain params tuple")
    if not _checks.is_int(k) or not -count <= k < count:
        raise IndexError(f"member index {k!r} out of range for an ensemble of {count} members")
    return tuple((np.asarray(W)[k], np.asarray(b)[k]) for W, b in params)


def stack(params_list):
    """Stacked params from a list of plain params tuples of one shape and dtype: member k is
    params_list[k] (copied)."""
    if not isinstance(params_list, (list, tuple)) or not params_list:
        raise TypeError("stack takes a non-empty list of params tuples")
    first, dtype = _checks.check_param_pairs(params_list[0], "params_list[0]")
    shapes = tuple((W.shape, b.shape) for W, b in first)
    rest = [_checks.check_like(first, p, f"params_list[{i}]", shapes) for i, p in enumerate(params_list[1:], 1)]
    everyone = [first] + rest
    return tuple((np.stack([p[l][0] for p in everyone]), np.stack([p[l][1] for p in everyone]))
                 for l in range(len(first)))


def member_outputs(function, net, params, x, **options):
    """``function(net, member params, x_k, **options)`` for every member k of stacked params,
    stacked: (K, batch, n_out). x (batch, n_in) is every member's; x (K, batch, n_in) gives member
    k its own x[k]."""
    count = members_of(params)
    per_member, (inputs,) = member_batches(count, "mse", x)
    if not per_member:
        inputs = [inputs] * count
    return np.stack([function(net, member(params, k), inputs[k], **options) for k in range(count)])


def member_batches(count, loss, *arrays, names=("x", "y_true", "sample_weight")):
    """(per_member, arrays) for a batch handed to ``count`` members: x, then optionally y_true
    (or backward's dy) and sample_weight (None stays None); ``names`` for the messages. An array
    is each member's own when it carries a leading member axis: x (K, batch, n_in), a float
    target or dy (K, batch, n_out), integer labels of softmax_cross_entropy (K, batch), weights
    (K, batch). When any does, per_member is True and every array comes back with the axis (the
    shared ones broadcast, read-only); otherwise all come back as given. ValueError when a member
    axis is not ``count`` long or the members' row counts disagree."""
    arrays = [None if a is None else _checks.real_array(a, what) for a, what in zip(arrays, names)]
    own = [a is not None and a.ndim == rank for a, rank in zip(arrays, _member_ranks(loss, arrays))]
    if not any(own):
        return False, tuple(arrays)
    rows = None
    for a, mine, what in zip(arrays, own, names):
        if not mine:
            continue
        if a.shape[0] != count:
            raise ValueError(f"{what} of shape {a.shape} gives {a.shape[0]} members their own rows; the ensemble "
                             f"has {count} members")
        if rows is not None and a.shape[1] != rows:
            raise ValueError(f"{what} of shape {a.shape} gives each member {a.shape[1]} rows; the other per-member "
                             f"arrays give {rows}")
        rows = a.shape[1]
    out = []
    for a, mine, what in zip(arrays, own, names):
        if a is None or mine:
            out.append(a)
            continue
        if a.ndim == 0 or a.shape[0] != rows:
            raise ValueError(f"{what} of shape {a.shape}, shared by every member, needs {rows} rows: the "
                             f"per-member arrays give each member {rows}")
        out.append(np.broadcast_to(a, (count,) + a.shape))
    return True, tuple(out)


def _member_ranks(loss, arrays):
    """The rank each of (x, y_true, sample_weight) has when it is each member's own."""
    y = arrays[1] if len(arrays) > 1 else None
    labels = loss == "softmax_cross_entropy" and y is not None and y.dtype.kind in "biu"
    return (3, 2 if labels else 3, 2)


def member_state(state, k):
    """Member k's optimizer state from an ensemble's (its moments' views; the count is shared)."""
    return type(state)(state.count, *(None if m is None else member(m, k) for m in state[1:]))


def fit_members(fit_one, net, params, x, y, options):
    """``fit`` of stacked params: ``fit_one(net, member k, x, y, **options)`` for each member with
    the k-th of ``member_seeds(seed, K)`` (its batch order, its bootstrap sample, a shuffled
    validation split) and its share of a stacked ``state``; each stops early on its own. Returns
    (stacked params, [each member's History])."""
    count = members_of(params)
    seeds = member_seeds(options["seed"], count)
    state = options["state"]
    fits = [fit_one(net, member(params, k), x, y, **dict(options, seed=seeds[k],
                                                            state=None if state is None else member_state(state, k)))
            for k in range(count)]
    return stack([p for p, _ in fits]), [h for _, h in fits]
