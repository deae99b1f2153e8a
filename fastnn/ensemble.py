"""Ensembles as stacked params, and helpers over whole parameter tuples.

An ensemble of K networks of one ``Net`` is the usual params tuple whose arrays carry a leading
member axis: W (K, fan_in, fan_out), b (K, fan_out). ``init(net, seed, members=K)`` makes one
(member k is ``init(net, seed=member_seeds(seed, K)[k])``), ``member`` takes one network out and
``stack`` puts networks together. ``polyak`` is a target network's soft update, stacked or not.
"""

import numpy as np

from ._kernels import ensemble as _kens

from . import _checks
from .net import member_seeds

__all__ = ["member_seeds", "member", "stack", "members_of", "polyak"]


def members_of(params, what="params"):
    """K for stacked params (every W (K, fan_in, fan_out), every b (K, fan_out)), None for a plain
    params tuple; ValueError or TypeError for anything else, saying what was expected."""
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


def _c_ready(params, dtype):
    return tuple((np.ascontiguousarray(W, dtype=dtype), np.ascontiguousarray(b, dtype=dtype)) for W, b in params)


def polyak(target, online, tau):
    """(1 - tau) * target + tau * online, array by array, as fresh arrays: a target network's soft
    update (tau in [0, 1]; 1 copies online). Plain or stacked params (both the same), in one
    compiled call."""
    if not _checks.is_real(tau):
        raise TypeError(f"tau must be a number in [0, 1]; got {type(tau).__name__} {tau!r}")
    if not 0.0 <= tau <= 1.0:
        raise ValueError(f"tau must lie in [0, 1]; got {tau!r}")
    count = members_of(target, "target")
    if members_of(online, "online") != count:
        raise ValueError("target and online must both be plain params or both stacked with one member count")
    target_arrays = [np.asarray(a) for pair in target for a in pair]
    online_arrays = [np.asarray(a) for pair in online for a in pair]
    if [a.shape for a in target_arrays] != [a.shape for a in online_arrays]:
        raise ValueError(f"target and online must have the same shapes; got {[a.shape for a in target_arrays]} and "
                         f"{[a.shape for a in online_arrays]}")
    dtype = target_arrays[0].dtype
    if dtype not in _checks.DTYPES or any(a.dtype != dtype for a in target_arrays + online_arrays):
        raise ValueError(f"target and online must be float32 or float64 throughout, one dtype; got "
                         f"{sorted({str(a.dtype) for a in target_arrays + online_arrays})}")
    target, online = _c_ready(target, dtype), _c_ready(online, dtype)
    out = tuple((np.empty_like(W), np.empty_like(b)) for W, b in target)
    _kens.polyak_into(target, online, float(tau), out)
    return out
