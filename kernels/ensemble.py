"""Kernels over whole parameter tuples, stacked by ensemble member or not."""

from . import views
from ._config import jit, jit_inline


@jit_inline
def _mix(target, online, keep, take, out):
    """out <- keep * target + take * online (1-D arrays of one size)."""
    for i in range(out.size):
        out[i] = keep * target[i] + take * online[i]


@jit
def polyak_into(target, online, tau, out):
    """out <- (1 - tau) target + tau online, array by array: params-shaped tuples ((W, b), ...) of
    C arrays of one dtype, of any rank (an ensemble's have a leading member axis). The caller
    checks that the three match."""
    take = out[0][1].dtype.type(tau)
    keep = out[0][1].dtype.type(1.0 - tau)
    for l in range(len(out)):
        _mix(views.whole(target[l][0]), views.whole(online[l][0]), keep, take, views.whole(out[l][0]))
        _mix(views.whole(target[l][1]), views.whole(online[l][1]), keep, take, views.whole(out[l][1]))
