"""save and load: a model (Net and params, plus optional metadata) as one ``.npz`` file.

The file is a NumPy zip archive of plain arrays: a format marker and version, the net's ``sizes``
and ``activations``, ``W0, b0, W1, b1, ...``, and ``meta/<name>`` for each metadata entry
(numbers or strings, such as the feature scaling the command line saves). Nothing is pickled:
``load`` reads with ``allow_pickle=False``, so a file can never run code. ``save`` writes to a
temporary file in the target folder, flushes it to disk and renames it over the target, so a crash
mid-write leaves either the old file or the new one, never half of one.
"""

import errno
import math
import os
import stat
import tempfile
import zipfile
import zlib

import numpy as np

from . import _checks
from .ensemble import is_stacked, member, members_of
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
    """Write ``net``, ``params`` (plain or an ensemble's stacked ones) and optional ``metadata`` (dict of name -> numbers or strings) to
    ``path`` (used as given; ``.npz`` is the usual suffix), atomically. A new file gets the mode
    the umask gives; a replaced one keeps its mode. A write that fails (a full disk, a directory
    for ``path``, no permission) raises ``OSError`` naming ``path`` and leaves no temporary file."""
    params = _checked(net, params)
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION),
              "sizes": np.array(net.sizes, dtype=np.int64), "activations": np.array(net.activations)}
    for l, (W, b) in enumerate(params):
        arrays[f"W{l}"], arrays[f"b{l}"] = W, b
    arrays.update(_metadata_arrays(metadata))
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory; save needs a file name such as "
                                f"{os.path.join(path, 'model.npz')}", path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fastnn-", suffix=".tmp")
    except OSError as exc:
        raise _naming(exc, path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600: give it the mode of the file it replaces, or a new file's.
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise _naming(exc, path) from None
        raise
    return path


def _naming(exc, path):
    """The OSError ``exc`` (disk full, file too large, no permission...) as one about ``path``, the
    user's file, not the temporary one it was written to."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    return OSError(exc.errno, f"could not save the model to {path}: {reason}", path)


def _mode_for(path):
    """The permission bits of the existing file at ``path``, or those the umask gives a new file."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask():
    """The process's umask, read without changing it where /proc tells it (Linux); else set and
    restored at once."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        _check_declared_sizes(path)
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


# A member may expand to at most this many times its compressed size (plus _SLACK): a model's
# numbers do not compress much, while a deflate bomb of zeros expands about 1000-fold.
_MAX_EXPANSION = 100
_SLACK = 1 << 20


def _check_declared_sizes(path):
    """Before anything is decompressed: each member's size in the archive's directory must be
    in proportion to its compressed size, and each array's header (shape and dtype, read from
    its first bytes) must declare exactly the bytes the directory says the member holds, so a
    file cannot make ``load`` allocate more than it plausibly contains. ValueError otherwise."""
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.file_size > _MAX_EXPANSION * info.compress_size + _SLACK:
                raise ValueError(f"member {info.filename} would expand from {info.compress_size} to "
                                 f"{info.file_size} bytes")
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    raise ValueError(f"member {info.filename} is a .npy file of version {version}")
                declared = member.tell() + math.prod(shape) * dtype.itemsize
            if dtype.hasobject or declared != info.file_size:
                raise ValueError(f"member {info.filename} declares {shape} {dtype} ({declared} bytes) but "
                                 f"holds {info.file_size} bytes")


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
    return net, _checked(net, params)


def _checked(net, params):
    """params checked against net: a plain params tuple, or stacked params (an ensemble, each
    member checked), as the kernels take them."""
    if not is_stacked(params):
        return _checks.check_params(net, params)[0]
    for k in range(members_of(params)):
        _checks.check_params(net, member(params, k), f"member {k}")
    dtypes = {np.asarray(a).dtype for pair in params for a in pair}
    if len(dtypes) > 1:
        raise ValueError(f"an ensemble's arrays must share one dtype; got {sorted(map(str, dtypes))}")
    return tuple((np.ascontiguousarray(W), np.ascontiguousarray(b)) for W, b in params)
