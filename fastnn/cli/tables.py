"""CSV tables for the command line: reading, encoding targets, standardising, holding out.

A table is a CSV file with a header row and one sample per row. Feature columns must be numeric;
a text target column is label-encoded (classes sorted, so the encoding does not depend on row
order). Problems with a file raise ``TableError`` with a one-line message naming the file, the
column and the line, which the command line prints without a traceback.
``training_table`` turns a file into what ``fastnn train`` fits: scaled training and validation
arrays, the loss and output width for the task, and the metadata saved with the model.
"""

import csv
from typing import NamedTuple

import numpy as np

__all__ = ["TableError", "read_table", "Scaler", "TrainingTable", "training_table"]


class TableError(ValueError):
    """A CSV file that cannot be used: unreadable, empty, ragged, missing or non-numeric columns."""


# The field separators read_table recognises: the one its header line holds most of (a comma when
# the header holds none), so semicolon- and tab-separated exports read as they are.
DELIMITERS = (",", ";", "\t")


def _delimiter(header_line):
    counts = [header_line.count(d) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))] if max(counts) else ","


def read_table(path):
    """(header, columns): column name -> list of the raw (stripped) strings, from a CSV file
    (UTF-8, a byte-order mark allowed; fields separated by one of DELIMITERS)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            delimiter = _delimiter(f.readline())
            f.seek(0)
            rows = [row for row in csv.reader(f, delimiter=delimiter) if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise TableError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TableError(f"{path}: is a directory, not a CSV file") from None
    except UnicodeDecodeError:
        raise TableError(f"{path}: not a UTF-8 text file") from None
    except csv.Error as exc:
        raise TableError(f"{path}: not a valid CSV file ({exc})") from None
    if not rows:
        raise TableError(f"{path}: the file is empty; expected a header row and data rows")
    header = [h.strip() for h in rows[0]]
    if len(set(header)) != len(header) or not all(header):
        raise TableError(f"{path}: the header must name every column once; got {', '.join(header)}")
    if len(rows) == 1:
        raise TableError(f"{path}: the file has a header but no data rows")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise TableError(f"{path}: row {line} has {len(row)} fields; the header has {len(header)}")
    return header, {name: [row[i].strip() for row in rows[1:]] for i, name in enumerate(header)}


# Target cells that mean "no value" (compared in lower case)
MISSING = frozenset({"", "na", "nan", "n/a", "null", "none"})


def numeric(path, name, values):
    """A column's strings as float64, or TableError naming the first value that is not a finite number."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        try:
            out[i] = float(v)
        except ValueError:
            out[i] = np.nan
        if not np.isfinite(out[i]):
            raise TableError(f"{path}: column {name!r} must be numeric; data row {i + 1} holds {v!r}")
    return out


def is_numeric(values):
    try:
        return all(np.isfinite(float(v)) for v in values)
    except ValueError:
        return False


def features(path, columns, names):
    """The named columns as a float64 matrix (rows, len(names)); TableError if one is missing."""
    missing = [n for n in names if n not in columns]
    if missing:
        raise TableError(f"{path}: missing column(s) {', '.join(repr(m) for m in missing)}; "
                         f"the file has {', '.join(columns)}")
    if not names:
        raise TableError(f"{path}: no feature columns besides the target")
    return np.column_stack([numeric(path, n, columns[n]) for n in names])


# A numeric target is taken for class labels when it holds whole numbers only, with at most this
# many distinct values, each distinct value standing for at least 20 rows on average.
MAX_CLASSES = 20
MIN_ROWS_PER_CLASS = 20


def detect_task(values):
    """"classification" for a target of text, booleans, or few distinct whole numbers (0/1, 1-5
    ratings: at most MAX_CLASSES of them, fewer than one per MIN_ROWS_PER_CLASS rows), else
    "regression"."""
    if not is_numeric(values):
        return "classification"
    numbers = np.array([float(v) for v in values])
    distinct = np.unique(numbers)
    whole = bool(np.all(distinct == np.round(distinct)))
    few = len(distinct) <= MAX_CLASSES and len(distinct) * MIN_ROWS_PER_CLASS <= len(numbers)
    return "classification" if whole and few else "regression"


def encode_labels(values):
    """(classes, labels): sorted distinct values (numerically when they are all numbers) and the
    int64 index of each value in them."""
    distinct = set(values)
    key = (lambda v: float(v)) if is_numeric(distinct) else str
    classes = sorted(distinct, key=key)
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index[v] for v in values], dtype=np.int64)


class Scaler:
    """Standardisation (x - mean) / scale per column; a constant column gets scale 1."""

    def __init__(self, mean, scale):
        self.mean, self.scale = np.asarray(mean, dtype=np.float64), np.asarray(scale, dtype=np.float64)

    @classmethod
    def fit(cls, x):
        std = x.std(axis=0)
        return cls(x.mean(axis=0), np.where(std > 0, std, 1.0))

    def transform(self, x):
        return (x - self.mean) / self.scale

    def inverse(self, z):
        return z * self.scale + self.mean


class TrainingTable(NamedTuple):
    """A CSV file prepared for training: scaled arrays, the task's loss, and the model's metadata."""

    train: tuple      # (x, y): features standardised with the training rows' statistics
    validation: tuple  # (x, y), the rows held out after a seeded shuffle
    loss: str
    n_out: int
    metrics: list
    meta: dict        # saved with the model: task, target, features, scaling, classes
    dropped: int = 0  # rows left out because their target cell was empty or NA / nan


def training_table(path, target, task=None, val_split=0.2, seed=0):
    """Read ``path`` and prepare it for training on column ``target``.

    ``task`` defaults to ``detect_task``'s choice. Rows
    whose target cell is empty or one of ``MISSING`` are left out (``TrainingTable.dropped``).
    Classification label-encodes the classes; regression standardises the target (its scaling is in
    ``meta`` as y_mean, y_scale). The rows are shuffled with ``seed``, the last ``val_split`` of them
    (at least one) held out, and the features standardised with the training rows' statistics only.
    """
    header, columns = read_table(path)
    if target not in columns:
        raise TableError(f"{path}: no column {target!r}; the file has {', '.join(header)}")
    names = [h for h in header if h != target]
    x = features(path, columns, names)
    raw_y = columns[target]
    # Rows without a target teach nothing: left out, so that a numeric target with a few empty
    # or "nan" cells stays a regression instead of becoming a classification of every value.
    known = np.array([v.strip().lower() not in MISSING for v in raw_y], dtype=bool)
    if not known.any():
        raise TableError(f"{path}: target column {target!r} holds no values")
    x, raw_y = x[known], [v for v, k in zip(raw_y, known) if k]
    task = task or detect_task(raw_y)
    meta = {"task": task, "target": target, "features": names}
    if task == "classification":
        classes, y = encode_labels(raw_y)
        if len(classes) < 2:
            raise TableError(f"{path}: target {target!r} has a single class {classes[0]!r}; "
                             "classification needs at least two")
        meta["classes"] = classes
        loss, n_out, metrics = "softmax_cross_entropy", len(classes), ["accuracy"]
    else:
        y_raw = numeric(path, target, raw_y)
        y_scaler = Scaler.fit(y_raw[:, None])
        y = y_scaler.transform(y_raw[:, None])
        meta.update(y_mean=y_scaler.mean, y_scale=y_scaler.scale)
        loss, n_out, metrics = "mse", 1, ["mae", "r2"]
    if len(y) < 2:
        raise TableError(f"{path}: {len(y)} data row; training needs at least 2 (one held out)")
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    n_val = min(max(1, int(round(val_split * len(y)))), len(y) - 1)
    cut = len(y) - n_val
    scaler = Scaler.fit(x[:cut])
    x = scaler.transform(x)
    meta.update(x_mean=scaler.mean, x_scale=scaler.scale)
    return TrainingTable((x[:cut], y[:cut]), (x[cut:], y[cut:]), loss, n_out, metrics, meta,
                         int((~known).sum()))
