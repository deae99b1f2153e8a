"""check_grad: compare ``grad`` with central finite differences, in float64.

For each checked parameter entry p: numeric = (L(p + h) - L(p - h)) / (2 h) with h = ``eps``, and
the relative error |analytic - numeric| / max(|analytic|, |numeric|, ``floor``). The floor keeps
entries whose gradient is essentially zero (dead relu units) from dividing rounding noise by zero.
Expect ~1e-7 or less for smooth activations; relu-family kinks crossed by +-h can give isolated
large errors.
"""

import numpy as np

from . import _checks
from .losses import mean_loss
from .network import grad, outputs_into

__all__ = ["check_grad"]

F64 = np.dtype(np.float64)


def check_grad(net, params, x, y_true, loss="mse", eps=1e-6, max_entries=2000, seed=0, floor=1e-8):
    """Largest relative error of ``grad`` against central differences, over the params' entries.

    Runs in float64 whatever the params' dtype. Nets with more than ``max_entries`` parameters are
    checked on that many entries drawn at random (``seed``); all of them otherwise.
    """
    params, _ = _checks.check_params(net, params)
    params = tuple((W.astype(F64), b.astype(F64)) for W, b in params)
    x2d, single = _checks.check_input(net, x, F64)
    target, labels = _checks.check_targets(loss, y_true, x2d.shape[0], net.sizes[-1], single, F64)
    eps = _checks.check_positive(eps, "eps")
    max_entries = _checks.check_positive_int(max_entries, "max_entries")
    _, analytic = grad(net, params, x2d, labels if labels is not None else target, loss)

    arrays = [a for pair in params for a in pair]
    grads = [g for pair in analytic for g in pair]
    entries = [(k, i) for k, a in enumerate(arrays) for i in range(a.size)]
    if len(entries) > max_entries:
        pick = _checks.rng_from(seed).choice(len(entries), size=max_entries, replace=False)
        entries = [entries[i] for i in np.sort(pick)]

    def loss_at():
        return mean_loss(loss, outputs_into(net, params, x2d), target, labels)

    worst = 0.0
    for k, i in entries:
        flat = arrays[k].reshape(-1)  # a view: nudging it nudges params
        keep = flat[i]
        flat[i] = keep + eps
        up = loss_at()
        flat[i] = keep - eps
        down = loss_at()
        flat[i] = keep
        numeric = (up - down) / (2 * eps)
        exact = grads[k].reshape(-1)[i]
        worst = max(worst, abs(exact - numeric) / max(abs(exact), abs(numeric), floor))
    return float(worst)
