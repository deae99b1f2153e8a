"""save and load: a model (Net and params, plus optional metadata) as one ``.npz`` file.

The file is a NumPy zip archive of plain arrays: a format marker and version, the net's ``sizes``
and ``activations``, ``W0, b0, W1, b1, ...``, and ``meta/<name>`` for each metadata entry
(numbers or strings, such as the feature scaling the command line saves). Nothing is pickled:
``load`` reads with ``allow_pickle=False``, so a file can never run code. ``save`` writes to a
temporary file in the target folder, flushes it to disk and renames it over the target, so a crash
mid-write leaves either the old file or the new one, never half of one.
"""

import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import _checks
from .net import Net

__all__ = ["save", "load"]

FORMAT = "fastnn-model"
VERSION = 1
_META = "meta/"


def _metadata_arrays(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict of name -> numbers or strings; got {type(metadata).__name__}")
    arrays = {}
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metadata names must be non-empty strings; got {key!r}")
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufU":
            raise TypeError(f"metadata {key!r} must hold numbers or strings (no objects: the file is never "
                            f"pickled); got dtype {arr.dtype}")
        arrays[_META + key] = arr
    return arrays


def save(path, net, params, metadata=None):
    """Write ``net``, ``params`` and optional ``metadata`` (dict of name -> numbers or strings) to
    ``path`` (used as given; ``.npz`` is the usual suffix), atomically."""
    params, _ = _checks.check_params(net, params)
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION),
              "sizes": np.array(net.sizes, dtype=np.int64), "activations": np.array(net.activations)}
    for l, (W, b) in enumerate(params):
        arrays[f"W{l}"], arrays[f"b{l}"] = W, b
    arrays.update(_metadata_arrays(metadata))
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastnn-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load(path, with_metadata=False):
    """(net, params) from a file written by ``save``; (net, params, metadata) with ``with_metadata``.

    A missing file raises ``FileNotFoundError``; a file that is not a fastnn model, or is
    truncated or corrupt, raises ``ValueError`` saying so.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:  # FileNotFoundError, IsADirectoryError, ... pass through as they are
        head = f.read(4)
    if head != b"PK\x03\x04":
        raise ValueError(f"{path} is not a fastnn model file: not a .npz (zip) archive")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise ValueError(f"{path} is not a readable fastnn model file: {exc}") from None
    try:
        net, params = _model_from(arrays)
    except (TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"{path} is not a valid fastnn model file: {exc}") from None
    if not with_metadata:
        return net, params
    meta = {k[len(_META):]: v for k, v in arrays.items() if k.startswith(_META)}
    return net, params, meta


def _model_from(arrays):
    fmt = arrays.get("format")
    if fmt is None or fmt.shape != () or str(fmt) != FORMAT:
        raise ValueError("no fastnn format marker")
    version = arrays["version"]
    if version.shape != () or version.dtype.kind not in "iu" or not 1 <= int(version) <= VERSION:
        raise ValueError(f"format version {version!r}; this fastnn reads versions 1 to {VERSION}")
    sizes, acts = arrays["sizes"], arrays["activations"]
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or acts.ndim != 1 or acts.dtype.kind != "U":
        raise ValueError("sizes must be a 1-D int array and activations a 1-D string array")
    net = Net(sizes=tuple(int(s) for s in sizes), activations=tuple(str(a) for a in acts))  # checks names
    params = tuple((arrays[f"W{l}"], arrays[f"b{l}"]) for l in range(len(net.activations)))
    params, _ = _checks.check_params(net, params)
    return net, params
