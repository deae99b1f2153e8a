"""An ensemble's prediction with its uncertainty: ``ensemble_predict``."""

import numpy as np

from . import _checks
from .ensemble import members_of
from .losses import VARIANCE_FLOOR  # gaussian_nll's, PyTorch's GaussianNLLLoss eps
from .network import forward

__all__ = ["ensemble_predict"]


HEADS = ("mean", "gaussian")


def ensemble_predict(net, params, x, head="mean"):
    """(mean, variance) of an ensemble's prediction for x, each (batch, d) (or (d,) for one sample).

    ``head="mean"``: each member's outputs are its prediction; the mean is their average over
    the members and the variance their spread (the variance over members). ``head="gaussian"``:
    each member outputs a mean (the first half of its outputs, d = n_out / 2) and a log-variance
    (the second half); the mean is the members' average mean and the variance the total
    predictive variance: the average of the members' variances, each exp(log-variance) floored at
    VARIANCE_FLOOR, plus the variance of their means."""
    _checks.check_name("head", head, HEADS)
    if members_of(params) is None:
        raise ValueError("ensemble_predict takes stacked params (init(net, members=K)); got a plain params tuple")
    outputs = forward(net, params, x).astype(np.float64)  # (K, batch, n_out), one compiled call
    if head == "mean":
        return outputs.mean(axis=0), outputs.var(axis=0)
    d, odd = divmod(net.sizes[-1], 2)
    if odd:
        raise ValueError(f"head='gaussian' needs an even output width (means, then log-variances); the net has "
                         f"{net.sizes[-1]} outputs")
    means, variances = outputs[..., :d], np.maximum(np.exp(outputs[..., d:]), VARIANCE_FLOOR)
    return means.mean(axis=0), variances.mean(axis=0) + means.var(axis=0)
