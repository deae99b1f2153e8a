"""``Predictor``: the network's forward pass over a private, packed copy of its params.

For code that evaluates a net on one sample (or a few) many times between updates, such as an RL
policy acting at every tick or a surrogate model inside a solver loop. ``forward`` checks the
params on every call and passes the ~6 arrays of a three-layer net into its kernel; a Predictor
checks and packs the params once, so a call checks only ``x`` and passes 4 arrays.
"""

import math

import numpy as np

from ._kernels import network as _knet

from . import _checks
from ._buffers import copy_params
from ._entry import PLAIN_FLAGS, entry_point
from ._codes import activation_codes
from .ensemble import members_of
from .network import ROWS_WITHOUT_BLAS, forward, outputs_into

__all__ = ["Predictor"]

_ndarray, _empty, _forward_one = np.ndarray, np.empty, _knet.forward_packed_row_into

# Up to this many rows the packed row-by-row kernel is used; above, one BLAS call per layer
# (the crossover ``forward`` uses too).
PACKED_MAX_ROWS = ROWS_WITHOUT_BLAS


class Predictor:
    """``p = Predictor(net, params)``; ``p(x)`` equals ``forward(net, params, x)``.

    The params are copied in when the Predictor is made (later changes to the caller's arrays are
    not seen); ``p.update(new_params)`` copies new values in, e.g. after each ``train_step``.
    ``p(x)`` returns a fresh array: (batch, n_out) for a 2-D x, (n_out,) for one 1-D sample.
    Calls may run at once from several threads (each call has its own scratch memory); ``update``
    must not run while another thread calls.

    Numbers agree with ``forward`` to rounding: up to ``PACKED_MAX_ROWS`` rows the products are
    summed in another order than BLAS sums them.

    Stacked params (an ensemble of K members): ``p(x)`` gives (K, n_out) for one sample and (K,
    batch, n_out) for a batch shared by the members, every member in one compiled call.
    """

    __slots__ = ("net", "dtype", "members", "_flat", "_params", "_layout", "_n_in", "_n_out", "_one_sample", "_one")

    def __init__(self, net, params):
        self.members = members_of(params)
        count = self.members or 1
        if self.members is None:
            params, dtype = _checks.check_params(net, params)
        else:
            params, dtype = _checks.check_stacked_params(net, params, count)
        self.net, self.dtype = net, dtype
        # Array by array ([W1 of every member][b1 of every member][W2 ...]), so that the params
        # are C-contiguous views of the flat copy, stacked or not; member k's W1 starts k W1.size
        # after the first's.
        shapes = [(W.shape[-2:], b.shape[-1:]) for W, b in params]
        sizes = [math.prod(shape) for pair in shapes for shape in pair]
        starts = np.cumsum([0] + [count * size for size in sizes]).tolist()
        self._flat = np.empty(starts[-1], dtype=dtype)
        lead = () if self.members is None else (count,)
        self._params = tuple((self._flat[starts[2 * l]:starts[2 * l + 1]].reshape(lead + w_shape),
                              self._flat[starts[2 * l + 1]:starts[2 * l + 2]].reshape(lead + b_shape))
                             for l, (w_shape, b_shape) in enumerate(shapes))
        codes = activation_codes(net, dtype)
        self._layout = np.array([(starts[2 * l] + k * sizes[2 * l], starts[2 * l + 1] + k * sizes[2 * l + 1],
                                  w_shape[0], w_shape[1], codes[l])
                                 for k in range(count) for l, (w_shape, _) in enumerate(shapes)], dtype=np.int64)
        self._n_in, self._n_out = net.sizes[0], net.sizes[-1]
        # x.shape of one sample, compared without building a tuple (an ensemble's goes the long way)
        self._one_sample = (self._n_in,) if self.members is None else None
        self._one = None  # the one-sample kernel's entry point (``_entry``), found by the first call
        self._copy_in(params)

    def __reduce__(self):
        # Made anew where it is loaded, so that the activations' forms are ready in that process.
        return Predictor, (self.net, self.params)

    def update(self, params):
        """Copy new params in (same net, dtype and members as at construction)."""
        if self.members is None:
            params, dtype = _checks.check_params(self.net, params)
        else:
            params, dtype = _checks.check_stacked_params(self.net, params, self.members)
        if dtype is not self.dtype:
            raise TypeError(f"params are {dtype}; this Predictor was made for {self.dtype} params")
        self._copy_in(params)

    def _copy_in(self, params):
        for (W, b), (W_own, b_own) in zip(params, self._params):
            W_own[...] = W
            b_own[...] = b

    @property
    def params(self):
        """A copy of the params it evaluates."""
        return copy_params(self._params)

    def __call__(self, x):
        # One sample: module-level names and positional arguments, ~0.1 us of a ~1.4 us call. The
        # argument types are fixed once x is a plain array of this shape and dtype (the others are
        # this object's own), so after the first call the kernel's entry point runs it untyped.
        if (type(x) is _ndarray and x.shape == self._one_sample and x.dtype is self.dtype
                and (x.flags.num & PLAIN_FLAGS) == PLAIN_FLAGS):
            out = _empty(self._n_out, self.dtype)
            one = self._one
            if one is None:
                _forward_one(self._flat, self._layout, x, out)
                self._one = entry_point(_forward_one, (self._flat, self._layout, x, out))
            else:
                one(self._flat, self._layout, x, out)
            return out
        x2d, single = _checks.check_input(self.net, x, self.dtype)
        if self.members is not None:
            return self._members_outputs(x2d, single)
        if x2d.shape[0] > PACKED_MAX_ROWS:
            out = outputs_into(self.net, self._params, x2d)
        else:
            out = np.empty((x2d.shape[0], self._n_out), dtype=self.dtype)
            _knet.forward_packed_into(self._flat, self._layout, x2d, out)
        return out[0] if single else out

    def _members_outputs(self, x2d, single):
        """(K, rows, n_out) for checked rows x2d ((K, n_out) for one sample)."""
        if x2d.shape[0] > PACKED_MAX_ROWS:
            return forward(self.net, self._params, x2d)
        out = np.empty((self.members, x2d.shape[0], self._n_out), dtype=self.dtype)
        _knet.forward_packed_members_into(self._flat, self._layout, x2d, out)
        return out[:, 0] if single else out

    def __repr__(self):
        members = "" if self.members is None else f", members={self.members}"
        return f"Predictor({self.net!r}, {self.dtype}{members})"
