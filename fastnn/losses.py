"""Losses: their names, what they compute, and their mean value.

Every loss takes the raw network output z (no softmax or sigmoid on the last layer) and returns a
mean, as PyTorch's defaults compute it. With e = z - t:

- ``mse``: e^2, averaged over batch x outputs.
- ``mae``: |e|, averaged over batch x outputs.
- ``huber``: e^2 / 2 where |e| <= 1, else |e| - 1/2 (delta 1), averaged over batch x outputs.
- ``sigmoid_cross_entropy``: max(z, 0) - z t + log(1 + e^-|z|), targets t in [0, 1] shaped like
  the output, averaged over batch x outputs.
- ``softmax_cross_entropy``: sum_j t_j (logsumexp(z) - z_j), averaged over the batch; targets are
  integer class labels of shape (batch,) or probabilities of shape (batch, k).
- ``gaussian_nll``: the output is a mean mu (its first half, d = k / 2) and a log-variance s (its
  second half), targets t are (batch, d); (log v + (mu - t)^2 / v) / 2 with v = max(exp(s), 1e-6),
  averaged over batch x d: PyTorch's GaussianNLLLoss (full=False) with var = exp(s).

All are stable for logits of any magnitude. The compiled path computes the value and its gradient
in one kernel (``kernels/losses.py``); ``fastnn.reference`` writes the gradients out in NumPy.
``mean_loss`` here is the value alone in float64, which ``fit`` reports for validation data.
"""

import numpy as np

__all__ = ["LOSSES", "mean_loss"]

LOSSES = ("mse", "mae", "huber", "softmax_cross_entropy", "sigmoid_cross_entropy", "gaussian_nll")

HUBER_DELTA = 1.0
VARIANCE_FLOOR = 1e-6  # gaussian_nll's clamp on the variance, PyTorch's eps


def mean_loss(loss, out, target, labels, weights=None):
    """Mean ``loss`` of raw outputs ``out`` (n, k) against checked targets (``target`` shaped like
    out, or int64 ``labels`` for softmax cross-entropy; the other None), in float64; 0.0 for n = 0.
    With ``weights`` (n,), the weighted mean over the samples, sum_i w_i l_i / sum_i w_i."""
    n = out.shape[0]
    if n == 0:
        return 0.0
    if weights is not None:
        return float(np.average(per_sample_loss(loss, out, target, labels), weights=weights.astype(np.float64)))
    if loss == "softmax_cross_entropy":
        return float(per_sample_loss(loss, out, target, labels).sum() / n)
    return float(_per_element(loss, out.astype(np.float64), target).mean())


def per_sample_loss(loss, out, target, labels):
    """Each sample's loss (n,) in float64: averaged over its outputs for the elementwise losses."""
    z = out.astype(np.float64)
    if loss == "softmax_cross_entropy":
        shifted = z - z.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        if labels is not None:
            return -log_softmax[np.arange(z.shape[0]), labels]
        return -(target * log_softmax).sum(axis=1)
    return _per_element(loss, z, target).mean(axis=1)


def _per_element(loss, z, target):
    """The elementwise losses' terms of float64 outputs z against their targets (gaussian_nll:
    one term per target, from its mean and log-variance outputs)."""
    if loss == "gaussian_nll":
        d = z.shape[1] // 2
        log_v = np.maximum(z[:, d:], np.log(VARIANCE_FLOOR))
        return 0.5 * (log_v + (z[:, :d] - target) ** 2 * np.exp(-log_v))
    e = z - target
    if loss == "mse":
        per_element = e * e
    elif loss == "mae":
        per_element = np.abs(e)
    elif loss == "huber":
        size = np.abs(e)
        per_element = np.where(size <= HUBER_DELTA, 0.5 * e * e, HUBER_DELTA * (size - 0.5 * HUBER_DELTA))
    else:  # sigmoid_cross_entropy
        per_element = np.maximum(z, 0) - z * target + np.log1p(np.exp(-np.abs(z)))
    return per_element
