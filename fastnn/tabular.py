"""``TabularModel``: a net trained on table rows together with the preparation of those rows, as
``fastnn train`` saves it, so that raw rows go in and class names or values in the target's units
come out.

Fields (read-only by convention): ``net``, ``params``; ``task`` ("classification" or
"regression"), ``target`` (the column it predicts) and ``features`` (the columns it reads, in
order); ``x_mean``, ``x_scale`` (each feature is standardised as (x - mean) / scale before the
net sees it) and ``x_fill`` (the value a missing feature cell takes, or None when missing cells
are an error); ``classes`` (classification: the class names, output unit k for classes[k]) or
``y_mean``, ``y_scale`` (regression: the net predicts (y - y_mean) / y_scale).
"""

import numpy as np

from . import _checks
from .metrics import softmax
from .network import predict
from .persist import load, save

__all__ = ["TabularModel"]


class TabularModel:
    """A net and its rows' preparation (see the module docstring); ``TabularModel.load(path)``
    reads a model saved by ``fastnn train``."""

    def __init__(self, net, params, meta):
        self.net, self.params = net, params
        self.task, self.target = str(meta["task"]), str(meta["target"])
        self.features = [str(f) for f in meta["features"]]
        self.x_mean = np.asarray(meta["x_mean"], dtype=np.float64)
        self.x_scale = np.asarray(meta["x_scale"], dtype=np.float64)
        self.x_fill = np.asarray(meta["x_fill"], dtype=np.float64) if "x_fill" in meta else None
        classification = self.task == "classification"
        self.classes = np.asarray(meta["classes"]).astype(str) if classification else None
        self.y_mean = None if classification else float(np.asarray(meta["y_mean"]).reshape(-1)[0])
        self.y_scale = None if classification else float(np.asarray(meta["y_scale"]).reshape(-1)[0])

    @classmethod
    def load(cls, path):
        """The model in ``path``, a file saved by ``fastnn train``; ValueError for a model saved
        without its rows' preparation (``fastnn.save`` of a bare net)."""
        net, params, meta = load(path, with_metadata=True)
        needed = {"task", "target", "features", "x_mean", "x_scale"}
        if not needed <= set(meta):
            raise ValueError(f"{path}: the model has no feature scaling; TabularModel (and `fastnn predict`) "
                             "read models saved by `fastnn train`")
        return cls(net, params, meta)

    def metadata(self):
        """The fields as ``fastnn.save`` stores them (``metadata=``)."""
        meta = {"task": self.task, "target": self.target, "features": self.features, "x_mean": self.x_mean,
                "x_scale": self.x_scale}
        if self.x_fill is not None:
            meta["x_fill"] = self.x_fill
        if self.classes is not None:
            meta["classes"] = self.classes
        else:
            meta.update(y_mean=[self.y_mean], y_scale=[self.y_scale])
        return meta

    def save(self, path):
        save(path, self.net, self.params, metadata=self.metadata())

    def _rows(self, rows):
        """Raw rows as a float64 (n, features) matrix: a 2-D array-like whose columns are
        ``features`` in order (one 1-D row for one sample), or a DataFrame with those columns;
        missing (NaN) cells filled from ``x_fill``."""
        if hasattr(rows, "columns"):  # a pandas or polars DataFrame: its columns by name
            absent = [f for f in self.features if f not in list(rows.columns)]
            if absent:
                raise ValueError(f"the rows have no column(s) {', '.join(map(repr, absent))}; the model reads "
                                 f"{', '.join(self.features)}")
            rows = np.column_stack([np.asarray(rows[f], dtype=np.float64) for f in self.features])
        x = _checks.real_array(rows, "rows").astype(np.float64)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"rows must be 2-D with {len(self.features)} columns ({', '.join(self.features)}); "
                             f"got shape {np.shape(rows)}")
        if np.isinf(x).any():
            raise ValueError("rows must hold finite numbers or NaN for a missing cell; got an infinity")
        gaps = np.isnan(x)
        if gaps.any():
            if self.x_fill is None:
                column = self.features[int(np.argwhere(gaps)[0][1])]
                raise ValueError(f"rows hold missing (NaN) cells, the first in column {column!r}, and the model "
                                 "was trained without a fill value (train with --missing mean)")
            x = np.where(gaps, self.x_fill, x)
        return x

    def outputs(self, rows):
        """The net's raw outputs for raw rows (standardised here first)."""
        x = (self._rows(rows) - self.x_mean) / self.x_scale
        return predict(self.net, self.params, x.astype(self.params[0][0].dtype), batch_size=4096)

    def predict(self, rows):
        """Class names (classification) or values in the target's units (regression), one per row."""
        return self.decode(self.outputs(rows))

    def decode(self, out):
        """Class names or values in the target's units for the net's raw outputs ``out``."""
        if self.classes is not None:
            return self.classes[np.argmax(out, axis=1)]
        return out[:, 0] * self.y_scale + self.y_mean

    def predict_proba(self, rows):
        """Each class's probability (n, len(classes)); classification models only."""
        if self.classes is None:
            raise ValueError(f"predict_proba needs a classification model; this one predicts {self.target!r} "
                             "by regression")
        return softmax(self.outputs(rows))

    def __repr__(self):
        kind = f"{len(self.classes)} classes" if self.classes is not None else "regression"
        return f"TabularModel({self.target!r}: {kind} from {len(self.features)} features, net {self.net.sizes})"
