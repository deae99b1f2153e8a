"""CSV tables for the command line: reading, task detection, targets, missing cells, holding out.

A table is a CSV file with a header row and one sample per row (``Table``). Feature columns must
be numeric; a target of text, or of a few whole numbers, is a classification's (``detect_task``).
Problems with a file raise ``TableError`` with a one-line message naming the file, the column and
the row, which the command line prints without a traceback. ``training_table`` turns a file into
what ``fastnn train`` hands to the scikit-learn estimators: training and validation rows, and the
metadata saved with the model.
"""

import csv
import io
import re
import warnings
from typing import NamedTuple

import numpy as np

from ..data import held_out_shuffled

__all__ = ["TableError", "Table", "TrainingTable", "training_table"]


class TableError(ValueError):
    """A CSV file that cannot be used: unreadable, empty, ragged, missing or non-numeric columns."""


# The field separators a Table recognises: the one its header line holds most of (a comma when
# the header holds none), so semicolon- and tab-separated exports read as they are.
DELIMITERS = (",", ";", "\t")


def _delimiter(header_line):
    counts = [header_line.count(d) for d in DELIMITERS]
    return DELIMITERS[counts.index(max(counts))] if max(counts) else ","


# Cells that mean "no value" (compared in lower case)
MISSING = frozenset({"", "na", "nan", "n/a", "null", "none"})
_MISSING_TOKENS = "|".join(re.escape(m) for m in sorted(MISSING - {""}))


def _missing_cells(delimiter):
    """A pattern matching every whole cell that holds one of MISSING (or nothing), for a file whose
    lines are joined by newlines."""
    d = re.escape(delimiter)
    return re.compile(rf"(?<![^{d}\n]) *(?:(?:{_MISSING_TOKENS}) *)?(?![^{d}\n])", re.IGNORECASE)


class Table:
    """A CSV file (UTF-8, a byte-order mark allowed, a header row naming every column once, fields
    separated by one of DELIMITERS): its ``header`` and ``rows`` (the data rows; blank lines
    skipped), with columns parsed only when asked for, by NumPy's C parser (``np.loadtxt``):
    ``numbers(names)`` as a float64 matrix (NaN in missing cells), ``column(name)`` as numbers or
    text, ``strings(name)`` as text. A 200,000 x 40 numeric file reads in ~1.5 s, where Python's
    csv module and float() took ~7 s."""

    def __init__(self, path):
        self.path = path
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                text = f.read()
        except FileNotFoundError:
            raise TableError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise TableError(f"{path}: is a directory, not a CSV file") from None
        except UnicodeDecodeError:
            raise TableError(f"{path}: not a UTF-8 text file") from None
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise TableError(f"{path}: the file is empty; expected a header row and data rows")
        self.delimiter = _delimiter(lines[0])
        header = [h.strip() for h in self._split(lines[0])]
        if len(set(header)) != len(header) or not all(header):
            raise TableError(f"{path}: the header must name every column once; got {', '.join(header)}")
        if len(lines) == 1:
            raise TableError(f"{path}: the file has a header but no data rows")
        self.header, self.rows = header, len(lines) - 1
        self._check_fields(lines)
        self._body = "\n".join(lines[1:])
        self._filled = None  # the body with every missing cell written "nan", made when first needed

    def _split(self, line):
        try:
            return next(csv.reader([line], delimiter=self.delimiter))
        except csv.Error as exc:
            raise TableError(f"{self.path}: not a valid CSV file ({exc})") from None

    def _check_fields(self, lines):
        """TableError naming the first data row whose field count is not the header's."""
        width = len(self.header) - 1
        if all(line.count(self.delimiter) == width for line in lines[1:]):
            return
        for number, line in enumerate(lines[1:], start=2):  # quoted delimiters: count the fields
            fields = len(self._split(line))
            if fields != len(self.header):
                raise TableError(f"{self.path}: row {number} has {fields} fields; the header has {len(self.header)}")

    def _load(self, names, dtype, body):
        columns = [self.header.index(n) for n in names]
        return np.loadtxt(io.StringIO(body), delimiter=self.delimiter, usecols=columns, dtype=dtype,
                          quotechar='"', comments=None, ndmin=2)

    def require(self, names, what="column"):
        """TableError unless every name is a column of the file."""
        absent = [n for n in names if n not in self.header]
        if absent:
            plural = "s" if len(absent) > 1 else ""
            raise TableError(f"{self.path}: no {what}{plural} {', '.join(repr(n) for n in absent)}; "
                             f"the file has {', '.join(self.header)}")

    def strings(self, name):
        """Column ``name``'s cells as text, stripped."""
        self.require([name])
        try:
            return np.char.strip(self._load([name], str, self._body)[:, 0])
        except ValueError as exc:  # what the field count check passed: a quote left open, say
            raise TableError(f"{self.path}: not a valid CSV file: column {name!r} cannot be read ({exc}); "
                             "check its quotes") from None

    def column(self, name):
        """(values, numeric): column ``name`` as float64 (NaN in missing cells) when each of its
        cells holds a number or one of MISSING, else its cells as text."""
        self.require([name])
        try:
            return self._load([name], np.float64, self._body)[:, 0], True
        except ValueError:
            strings = self.strings(name)
        missing = np.isin(np.char.lower(strings), list(MISSING))
        values = np.full(strings.shape, np.nan)
        try:
            values[~missing] = strings[~missing].astype(np.float64)
        except ValueError:
            return strings, False
        return values, True

    def numbers(self, names):
        """The named columns as a float64 matrix (rows, len(names)), NaN in missing cells;
        TableError naming the first cell that is text or infinite."""
        self.require(names)
        try:
            x = self._load(names, np.float64, self._body)
        except ValueError:
            if self._filled is None:
                self._filled = _missing_cells(self.delimiter).sub("nan", self._body)
            try:
                x = self._load(names, np.float64, self._filled)
            except ValueError:
                x = np.column_stack([self._numeric(name) for name in names])
        infinite = np.isinf(x)
        if infinite.any():
            row, col = np.argwhere(infinite)[0]
            raise TableError(f"{self.path}: column {names[col]!r} must hold finite numbers; data row {row + 1} "
                             f"holds {float(x[row, col])!r}")
        return x

    def _numeric(self, name):
        values, numeric = self.column(name)
        if not numeric:
            bad = next(i for i, v in enumerate(values) if v.lower() not in MISSING and not _is_number(v))
            raise TableError(f"{self.path}: column {name!r} must be numeric; data row {bad + 1} holds {str(values[bad])!r}")
        return values


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


# A numeric target is taken for class labels when it holds whole numbers only, with at most this
# many distinct values, each distinct value standing for at least 20 rows on average.
MAX_CLASSES = 20
MIN_ROWS_PER_CLASS = 20


def detect_task(values, numeric):
    """"classification" for a target of text (``numeric`` False), or of few distinct whole numbers
    (0/1, 1-5 ratings: at most MAX_CLASSES of them, fewer than one per MIN_ROWS_PER_CLASS rows),
    else "regression"."""
    if not numeric:
        return "classification"
    distinct = np.unique(values)
    whole = bool(np.all(distinct == np.round(distinct)))
    few = len(distinct) <= MAX_CLASSES and len(distinct) * MIN_ROWS_PER_CLASS <= len(values)
    return "classification" if whole and few else "regression"


def class_names(values, numeric):
    """Class names for a target's values: numbers as %g writes them (1.0 and 1 name one class),
    text as it is."""
    if numeric:
        return np.array([f"{v:g}" for v in values]) if len(values) else np.array([], dtype=str)
    return np.asarray(values, dtype=str)


def is_missing(values, numeric):
    """True where a target's cell holds no value."""
    return np.isnan(values) if numeric else np.isin(np.char.lower(values), list(MISSING))


MISSING_POLICIES = ("error", "mean")


def fill_missing(path, x, names, fill):
    """x with its NaN cells replaced by ``fill`` (one value per column), or TableError naming the
    first missing cell when ``fill`` is None."""
    gaps = np.isnan(x)
    if not gaps.any():
        return x
    if fill is None:
        row, col = np.argwhere(gaps)[0]
        raise TableError(f"{path}: column {names[col]!r} has {int(gaps[:, col].sum())} missing cell(s), the first "
                         f"in data row {row + 1}; pass --missing mean to fill them with the training mean, or "
                         f"--drop {names[col]}")
    return np.where(gaps, fill, x)


class TrainingTable(NamedTuple):
    """A CSV file prepared for the estimators: raw feature rows (missing cells filled, if asked),
    targets, and what the model keeps besides its net."""

    train: tuple      # (x, y): x raw features; y class names, or the target standardised
    validation: tuple  # (x, y), the rows held out after a seeded, stratified draw
    meta: dict        # task, target, features; classes' order aside, the saved model's preparation
    dropped: int = 0  # rows left out because their target cell was empty or NA / nan
    filled: int = 0   # missing feature cells filled with the training mean


def training_table(path, target, task=None, val_split=0.2, seed=0, missing="error", drop=()):
    """Read ``path`` and prepare it for training on column ``target`` from every other column
    but those in ``drop``.

    ``task`` defaults to ``detect_task``'s choice. Rows whose target cell is empty or one of
    ``MISSING`` are left out (``TrainingTable.dropped``). Missing feature cells are an error, or
    with ``missing="mean"`` filled with their column's mean over the training rows (kept in
    ``meta`` as x_fill, for predictions). Classification gives the class names (numbers written
    as %g); regression standardises the target (its scaling is in ``meta`` as y_mean, y_scale).
    ``val_split`` of the rows (at least one) are held out, drawn with ``seed`` (stratified for
    classification: each class gives its share). The estimators standardise the features.
    """
    if missing not in MISSING_POLICIES:
        raise TableError(f"--missing must be one of {', '.join(MISSING_POLICIES)}; got {missing!r}")
    table = Table(path)
    table.require([target])
    table.require(drop, "column given to --drop")
    names = [h for h in table.header if h != target and h not in drop]
    if not names:
        raise TableError(f"{path}: no feature columns besides the target")
    raw_y, numeric = table.column(target)
    x = table.numbers(names)
    # Rows without a target teach nothing: left out, so that a numeric target with a few empty
    # or "nan" cells stays a regression instead of becoming a classification of every value.
    known = ~is_missing(raw_y, numeric)
    if not known.any():
        raise TableError(f"{path}: target column {target!r} holds no values")
    if missing == "error":  # here, where the data rows are still in the file's order
        fill_missing(path, np.where(known[:, None], x, 0.0), names, None)
    x, raw_y = x[known], raw_y[known]
    task = task or detect_task(raw_y, numeric)
    meta = {"task": task, "target": target, "features": names}
    classification = task == "classification"
    if classification:
        y = class_names(raw_y, numeric)
        if np.unique(y).size < 2:
            raise TableError(f"{path}: target {target!r} has a single class {str(y[0])!r}; "
                             "classification needs at least two")
    elif not numeric:
        bad = next(v for v in raw_y if not _is_number(v))
        raise TableError(f"{path}: column {target!r} must be numeric for a regression; it holds {str(bad)!r}")
    if len(raw_y) < 2:
        raise TableError(f"{path}: {len(raw_y)} data row; training needs at least 2 (one held out)")
    # The validation rows: a seeded random draw, stratified for classes (each class gives its share)
    n_val = min(max(1, int(round(val_split * len(raw_y)))), len(raw_y) - 1)
    held = held_out_shuffled(y if classification else np.zeros(len(raw_y)), n_val / len(raw_y),
                             np.random.default_rng(seed), stratify=classification)
    if not classification:
        y_mean, y_scale = float(raw_y[~held].mean()), float(raw_y[~held].std())
        y_scale = y_scale if y_scale > 0 else 1.0  # a constant target
        y = (raw_y - y_mean) / y_scale
        meta.update(y_mean=[y_mean], y_scale=[y_scale])
    gaps = int(np.isnan(x).sum())
    if missing == "mean" and gaps:
        with warnings.catch_warnings():  # a column with no value in the training rows: checked below
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmean(x[~held], axis=0)
        empty = [n for n, v in zip(names, fill) if np.isnan(v)]
        if empty:
            raise TableError(f"{path}: column(s) {', '.join(map(repr, empty))} hold no values in the training rows; "
                             f"--drop them")
        meta["x_fill"] = fill
        x = fill_missing(path, x, names, fill)
    return TrainingTable((x[~held], y[~held]), (x[held], y[held]), meta, int((~known).sum()),
                         gaps if "x_fill" in meta else 0)
