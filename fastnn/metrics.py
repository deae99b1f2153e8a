"""Outputs to probabilities, and the metrics ``fit`` reports.

The network returns raw outputs (logits for the cross-entropy losses). ``softmax`` and ``sigmoid``
turn them into probabilities, stably for any magnitude. Metrics compare raw outputs with targets
in the forms the losses accept (see ``fastnn.grad``):

- ``accuracy``: fraction of correct predictions. Softmax cross-entropy (or any loss with several
  outputs): argmax of the output against the label (or the argmax of target probabilities).
  Sigmoid cross-entropy: each output is a separate yes/no, logit > 0 against target > 0.5.
  One output with another loss: output > 0.5 against target > 0.5.
- ``mae``: mean absolute error over all outputs.
- ``r2``: coefficient of determination, 1 - SS_res / SS_tot per output, averaged over outputs
  (scikit-learn's ``r2_score`` with uniform averaging; an output with constant targets scores 1 if
  predicted exactly, else 0).
"""

import numpy as np

from . import _checks

__all__ = ["softmax", "sigmoid", "METRICS"]

METRICS = ("accuracy", "mae", "r2")
HIGHER_IS_BETTER = frozenset({"accuracy", "r2"})


def _float_array(z, what):
    z = _checks.real_array(z, what)
    return z if z.dtype.kind == "f" else z.astype(np.float64)


def softmax(logits, axis=-1):
    """exp(z) / sum(exp(z)) along ``axis``, shifted by the max so nothing overflows. Keeps float dtypes."""
    z = _float_array(logits, "logits")
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def sigmoid(logits):
    """1 / (1 + exp(-z)), elementwise, without overflow for large |z|. Keeps float dtypes."""
    z = _float_array(logits, "logits")
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def check_metrics(metrics):
    """A tuple of metric names from a name or a sequence of names."""
    names = (metrics,) if isinstance(metrics, str) else metrics
    if not isinstance(names, (tuple, list)):
        raise TypeError(f"metrics must be a name or a list of names from {', '.join(METRICS)}; "
                        f"got {type(metrics).__name__}")
    for name in names:
        _checks.check_name("metric", name, METRICS)
    return tuple(names)


def compute(name, loss, out, target, labels):
    """Metric ``name`` of raw outputs ``out`` (n, k) against checked targets (one of target, labels);
    for gaussian_nll, of the predicted means (the first half of the outputs)."""
    if loss == "gaussian_nll":
        out = out[:, : out.shape[1] // 2]
    if name == "accuracy":
        if labels is not None:
            return float(np.mean(np.argmax(out, axis=1) == labels))
        if loss == "sigmoid_cross_entropy":
            return float(np.mean((out > 0) == (target > 0.5)))
        if out.shape[1] == 1:
            return float(np.mean((out > 0.5) == (target > 0.5)))
        return float(np.mean(np.argmax(out, axis=1) == np.argmax(target, axis=1)))
    if labels is not None:  # regression metrics against labels: compare with one-hot targets
        target = np.eye(out.shape[1], dtype=out.dtype)[labels]
    if name == "mae":
        return float(np.mean(np.abs(out.astype(np.float64) - target)))
    t = target.astype(np.float64)
    ss_res = np.sum((t - out) ** 2, axis=0)
    ss_tot = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
    safe = np.where(ss_tot > 0, ss_tot, 1.0)
    per_output = np.where(ss_tot > 0, 1 - ss_res / safe, np.where(ss_res == 0, 1.0, 0.0))
    return float(np.mean(per_output))
