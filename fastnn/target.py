"""Target networks for reinforcement learning: ``polyak``, the soft update of a target network
towards the online one, over plain or stacked params (``fastnn.ensemble``) in one compiled call."""

import numpy as np

from ._kernels import ensemble as _kens

from . import _checks
from .ensemble import members_of

__all__ = ["polyak"]


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
