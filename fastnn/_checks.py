"""Validation and normalisation at the public boundary, shared by the Numba path and the reference.

Every public function runs its inputs through these helpers before any computation: they raise
``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind, wrong value or shape) with a
message that says what was expected and what was given, and they return arrays that the kernels
can index without bounds checks: the params' dtype, C-contiguous, writable (Numba types read-only
arrays differently), shapes matching the net.

Sections: numbers and names; seeds and dtypes; params and their mirrors (grads, moments); inputs,
targets and datasets.
"""

import math

import numpy as np

from . import net as _net  # the module, not the class: net.py imports these checks too
from .losses import LOSSES

DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
# Each of DTYPES for an equal dtype object: arrays made by unpickling carry dtype objects equal to
# NumPy's but not the same object, and the fast paths compare dtypes by identity.
_CANONICAL = {d: d for d in DTYPES}


# Numbers and names

def is_int(v):
    """True for Python and NumPy ints, False for bools."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def is_real(value):
    """True for Python and NumPy ints and floats, False for bools (which are ints to Python)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def check_positive_int(value, what):
    """A positive int (Python or NumPy; not bool)."""
    if not is_int(value):
        raise TypeError(f"{what} must be a positive int; got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{what} must be a positive int; got {value!r}")
    return int(value)


def check_nonnegative(value, what):
    """A finite real number >= 0, as a float."""
    if not is_real(value):
        raise TypeError(f"{what} must be a number; got {type(value).__name__} {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{what} must be a finite number >= 0; got {value!r}")
    return float(value)


def check_positive(value, what):
    """A finite positive real number, as a float."""
    if not is_real(value):
        raise TypeError(f"{what} must be a positive number; got {type(value).__name__} {value!r}")
    if not (np.isfinite(value) and value > 0):
        raise ValueError(f"{what} must be a positive finite number; got {value!r}")
    return float(value)


def check_fraction(value, what, upper_open=True):
    """A number in [0, 1) (or [0, 1] when upper_open is False), as a float."""
    if not is_real(value):
        raise TypeError(f"{what} must be a number; got {type(value).__name__} {value!r}")
    hi_ok = value < 1 if upper_open else value <= 1
    if not (value >= 0 and hi_ok):
        raise ValueError(f"{what} must lie in [0, 1{')' if upper_open else ']'}; got {value!r}")
    return float(value)


def check_lr(lr):
    """A learning rate: a positive number, or a callable lr(count) checked when it is called (``check_lr_value``)."""
    if callable(lr):
        return lr
    return check_positive(lr, "learning rate lr")


def check_lr_value(value, count):
    """What an lr callable returned for update ``count``: a finite number >= 0, as a float."""
    if not is_real(value):
        raise TypeError(f"lr schedule must return a number; returned {type(value).__name__} at count {count}")
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"lr schedule returned {value!r} at count {count}; expected a finite value >= 0")
    return float(value)


def check_name(kind, name, valid):
    """Raise unless ``name`` is one of ``valid``; the message lists the valid names."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be a string, one of {', '.join(valid)}; got {type(name).__name__} {name!r}")
    if name not in valid:
        raise ValueError(f"unknown {kind} {name!r}; expected one of: {', '.join(valid)}")
    return name


def check_loss(loss):
    return check_name("loss", loss, LOSSES)


# Seeds and dtypes

def rng_from(seed, allow_none=False):
    """A numpy Generator from an int seed >= 0 or a Generator (used as is); with ``allow_none``,
    None gives one seeded from fresh entropy."""
    if isinstance(seed, np.random.Generator):
        return seed
    if is_int(seed):
        if seed < 0:
            raise ValueError(f"seed must be >= 0; got {seed}")
        return np.random.default_rng(int(seed))
    if seed is None and allow_none:
        return np.random.default_rng()
    kinds = "an int, a numpy.random.Generator or None" if allow_none else "an int or a numpy.random.Generator"
    raise TypeError(f"seed must be {kinds}; got {type(seed).__name__} {seed!r}")


def check_dtype(dtype):
    """np.dtype(dtype) if it is float32 or float64, else TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in DTYPES:
        raise TypeError(f"dtype must be float32 or float64; got {dtype!r}")
    return dt


# Params and their mirrors

def check_net(net):
    if not isinstance(net, _net.Net):
        raise TypeError(f"net must be a fastnn.Net (see fastnn.mlp); got {type(net).__name__}")
    return net


def _kernel_ready(a, dtype):
    """``a`` as a C-contiguous, writable array of ``dtype``; copies only when it is not one already."""
    if type(a) is np.ndarray and a.dtype is dtype:
        flags = a.flags
        if flags.c_contiguous and flags.writeable:
            return a  # the common case, without the cost of ascontiguousarray
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


def check_params(net, params, what="params"):
    """Check that ``params`` fits ``net``; return (params as a tuple of (W, b) tuples, dtype)."""
    check_net(net)
    return _ready_pairs(params, net.shapes(), None) or _check_pairs(params, what, net.shapes(), None,
                                                                      f"net {net.sizes} needs")


def check_param_pairs(params, what="params"):
    """Params without a Net (the optimizers): (2-D W, 1-D b) float pairs of one dtype."""
    return _check_pairs(params, what, None, None, "")


def check_stacked_params(net, params, count, what="params"):
    """Check that stacked ``params`` (an ensemble of ``count`` members, ``ensemble.members_of``)
    fit ``net``: W (count, fan_in, fan_out), b (count, fan_out). Returns (params made
    kernel-ready, dtype)."""
    check_net(net)
    shapes = tuple(((count,) + w, (count,) + b) for w, b in net.shapes())
    return _ready_pairs(params, shapes, None) or _check_pairs(
        params, what, shapes, None, f"an ensemble of {count} members of net {net.sizes} needs")


def check_stacked_pairs(params, count, what="params"):
    """Stacked params without a Net (the optimizers): (3-D W, 2-D b) float pairs of one dtype,
    each with the leading member axis ``count``."""
    shapes = tuple(((count,) + np.shape(W)[1:], (count,) + np.shape(b)[1:]) for W, b in params)
    return _check_pairs(params, what, shapes, None, "an ensemble's stacked arrays need")


def check_like(params, other, what, shapes=None):
    """Check that ``other`` (grads, a moment) mirrors ``params``: same structure, shapes, dtype.
    ``shapes``: the params' ((W shape, b shape), ...) when the caller has them already."""
    if shapes is None:
        shapes = tuple((W.shape, b.shape) for W, b in params)
    dtype = params[0][0].dtype
    return (_ready_pairs(other, shapes, dtype) or _check_pairs(other, what, shapes, dtype, "params have"))[0]


def _ready_pairs(pairs, shapes, dtype):
    """``pairs`` unchanged when it is already what the kernels take: a tuple of (W, b) tuples of
    C-contiguous, writable arrays of one float dtype (``dtype`` when given) with exactly ``shapes``.
    Else None, and ``_check_pairs`` takes the long way, which says what is wrong or converts.

    Every public call checks its params, so this runs once per call per array: this way takes
    about a third of the time of the long way.
    """
    if type(pairs) is not tuple or len(pairs) != len(shapes) or not pairs:
        return None
    first = pairs[0]
    if type(first) is not tuple or len(first) != 2 or type(first[0]) is not np.ndarray:
        return None
    dt = first[0].dtype
    if (dtype is not None and dt is not dtype) or dt not in DTYPES:
        return None
    dt = _CANONICAL[dt]  # an unpickled array's dtype fails the identity tests below: the long way
    ndarray = np.ndarray
    for layer, (w_shape, b_shape) in zip(pairs, shapes):
        if type(layer) is not tuple or len(layer) != 2:
            return None
        W, b = layer
        if (type(W) is not ndarray or type(b) is not ndarray or W.dtype is not dt or b.dtype is not dt
                or W.shape != w_shape or b.shape != b_shape):
            return None
        fw, fb = W.flags, b.flags
        if not (fw.c_contiguous and fw.writeable and fb.c_contiguous and fb.writeable):
            return None
    return pairs, dt


def _check_pairs(pairs, what, shapes, dtype, owner):
    """The shared walk over (W, b) pairs: types, one float dtype, shapes (or ranks when shapes is None).

    ``dtype``, when given, is required; otherwise the first array sets it. Returns (pairs made
    kernel-ready, dtype).
    """
    if not isinstance(pairs, (tuple, list)) or (shapes is None and not pairs):
        raise TypeError(f"{what} must be a tuple of (W, b) pairs, one per layer; got {type(pairs).__name__}")
    if shapes is not None and len(pairs) != len(shapes):
        raise ValueError(f"{what} has {len(pairs)} layers; {owner} {len(shapes)} (W, b) pairs")
    required = dtype
    out = []
    for l, layer in enumerate(pairs):
        if not isinstance(layer, (tuple, list)) or len(layer) != 2:
            raise TypeError(f"{what}[{l}] must be a (W, b) pair; got {type(layer).__name__}")
        pair = []
        for i, arr in enumerate(layer):
            # Hot path: every call of every public function runs this; build messages only on error.
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{what}[{l}] {'Wb'[i]} must be a numpy array; got {type(arr).__name__}")
            dt = arr.dtype
            if dt is not dtype:
                if dt not in DTYPES:
                    raise TypeError(f"{what}[{l}] {'Wb'[i]} must be float32 or float64; got dtype {dt}")
                if dtype is None:
                    dtype = _CANONICAL[dt]
                elif dt != dtype:
                    earlier = "params are" if required is not None else "earlier arrays are"
                    raise TypeError(f"{what} mixes dtypes: {what}[{l}] {'Wb'[i]} is {dt}, {earlier} {dtype}")
            if shapes is not None:
                if arr.shape != shapes[l][i]:
                    stacked = arr.shape[1:] == shapes[l][i]  # an ensemble's, where one net's are wanted
                    hint = "; stacked params (an ensemble): pass one member, fnn.member(params, k)" if stacked else ""
                    raise ValueError(f"{what}[{l}] {'Wb'[i]} has shape {arr.shape}; {owner} {shapes[l][i]}{hint}")
            elif arr.ndim != 2 - i:
                raise ValueError(f"{what}[{l}] {'Wb'[i]} must be {2 - i}-D; got shape {arr.shape}")
            pair.append(_kernel_ready(arr, dtype))
        out.append(tuple(pair))
    return tuple(out), dtype


# Inputs, targets and datasets

def real_array(a, what):
    """np.asarray(a) after checking it holds real numbers (bool, int or float)."""
    try:
        arr = np.asarray(a)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise ValueError(f"{what} must be a rectangular array of real numbers; {exc}") from None
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers; got dtype {arr.dtype}")
    return arr


def check_input(net, x, dtype, what="x"):
    """x as a (batch, n_in) array of ``dtype``; a 1-D x is one sample. Returns (x2d, single)."""
    arr = real_array(x, what)
    width = net.sizes[0]
    if arr.ndim not in (1, 2):
        raise ValueError(f"{what} must be 1-D (one sample) or 2-D (batch, {width}); got shape {arr.shape}")
    single = arr.ndim == 1
    if arr.shape[-1] != width:
        raise ValueError(f"{what} has {arr.shape[-1]} features (shape {arr.shape}); net expects {width}")
    arr = arr.reshape(1, width) if single else arr
    return _kernel_ready(arr, dtype), single


def check_output_grad(net, dy, batch, single, dtype):
    """dL/dy for ``backward``: shaped like the network output."""
    arr = real_array(dy, "dy")
    k = net.sizes[-1]
    expected = (k,) if single else (batch, k)
    if arr.shape != expected:
        raise ValueError(f"dy must have the output's shape {expected}; got {arr.shape}")
    return _kernel_ready(arr.reshape(batch, k), dtype)


def check_targets(loss, y, batch, k, single, dtype):
    """Targets for ``loss`` against outputs of shape (batch, k). Returns (target, labels), one None.

    softmax_cross_entropy takes integer class labels, shape (batch,) (a scalar for one sample), or
    probabilities shaped like the output. The elementwise losses take targets shaped like the
    output, gaussian_nll half as wide; with one target per sample, shape (batch,) is accepted too.
    """
    check_loss(loss)
    arr = real_array(y, "y_true")
    if loss == "gaussian_nll":  # a mean and a log-variance output per target
        if k % 2:
            raise ValueError(f"loss 'gaussian_nll' needs an even output width (means, then log-variances); the "
                             f"net has {k} outputs")
        k //= 2
    shape = (k,) if single else (batch, k)
    if loss == "softmax_cross_entropy" and arr.ndim == len(shape) - 1:
        if arr.shape != shape[:-1]:
            raise ValueError(f"class labels must have shape {shape[:-1]}, one per sample; got {arr.shape}")
        return None, _check_labels(arr.reshape(batch), k)
    if arr.shape == shape or (k == 1 and arr.shape == shape[:-1]):
        return _kernel_ready(arr.reshape(batch, k), dtype), None
    expected = f"{shape}" + (f" or {shape[:-1]}" if k == 1 else "")
    if loss == "softmax_cross_entropy":
        expected = f"labels of shape {shape[:-1]} or probabilities of shape {shape}"
    raise ValueError(f"y_true for loss {loss!r} must have shape {expected}; got {arr.shape}")


def _check_labels(labels, k):
    if labels.dtype.kind == "b":
        raise TypeError("class labels must be integers in [0, k); got a boolean array")
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.floor(labels)):
            raise ValueError("class labels must be integers in [0, k); got non-integral values")
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(
            f"class labels must lie in [0, {k}) for a {k}-way output; got values from "
            f"{labels.min()} to {labels.max()}"
        )
    return np.ascontiguousarray(labels, dtype=np.int64)


def check_dataset(x, y, what="x"):
    """x and y as arrays with the same number of samples (the first axis), at least one sample."""
    x = real_array(x, what)
    y_arr = real_array(y, "y")
    if x.ndim != 2:
        raise ValueError(f"{what} must be 2-D (samples, features); got shape {x.shape}")
    if y_arr.ndim == 0 or y_arr.shape[0] != x.shape[0]:
        raise ValueError(f"{what} and y must hold the same number of samples; got {x.shape[0]} and "
                         f"{'a scalar' if y_arr.ndim == 0 else y_arr.shape[0]}")
    if x.shape[0] == 0:
        raise ValueError(f"{what} holds no samples")
    return x, y_arr


def check_sample_weight(weights, batch, dtype, single=False, what="sample_weight"):
    """``sample_weight`` for a batch of ``batch`` rows: one finite weight >= 0 per row (a number for
    one sample), not all zero, as a C-contiguous (batch,) array of ``dtype``; None stays None."""
    if weights is None:
        return None
    arr = real_array(weights, what)
    if single and arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.shape != (batch,):
        raise ValueError(f"{what} must have shape ({batch},), one weight per sample; got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must be finite; got NaN or infinite values")
    if np.any(arr < 0):
        raise ValueError(f"{what} must be >= 0; got a weight of {float(arr.min())!r}")
    if batch and not np.any(arr > 0):
        raise ValueError(f"{what} is zero for every sample: at least one must be positive")
    return _kernel_ready(arr, dtype)
