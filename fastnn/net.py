"""Network specification and parameter initialisation.

A ``Net`` is an immutable, hashable description of an MLP: layer sizes and one activation per
layer. Parameters are not part of it: ``init`` returns them as a plain tuple of (W, b) pairs, with
W of shape (fan_in, fan_out) and b of shape (fan_out,), C-contiguous, all of one float dtype.
The random generator is passed in as a seed or a ``numpy.random.Generator``, never global.
"""

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import _checks

ACTIVATIONS = ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu", "silu")

# Initialisation schemes (formulas in ``init``); "auto" picks by activation.
INITS = ("auto", "he_normal", "he_uniform", "glorot_normal", "glorot_uniform", "lecun_normal")
_HE_FAMILY = frozenset({"relu", "leaky_relu", "elu", "softplus", "gelu", "silu"})

@dataclass(frozen=True)
class Net:
    """An MLP: ``sizes`` (n_in, hidden..., n_out) and ``activations``, one name per layer."""

    sizes: tuple
    activations: tuple

    def __post_init__(self):
        sizes = tuple(self.sizes) if isinstance(self.sizes, (list, tuple)) else self.sizes
        if not isinstance(sizes, tuple) or len(sizes) < 2:
            raise ValueError(f"Net sizes must be a sequence of at least two layer widths; got {self.sizes!r}")
        for i, s in enumerate(sizes):
            if not _checks.is_int(s):
                raise TypeError(f"Net sizes[{i}] must be an int; got {type(s).__name__} {s!r}")
            if s <= 0:
                raise ValueError(f"Net sizes must be positive; sizes[{i}] is {s}")
        acts = self.activations
        if isinstance(acts, str) or not isinstance(acts, (list, tuple)):
            raise TypeError(f"Net activations must be a sequence of names, one per layer; got {acts!r}")
        acts = tuple(acts)
        if len(acts) != len(sizes) - 1:
            raise ValueError(
                f"Net needs one activation per layer: {len(sizes) - 1} for sizes {sizes}; got {len(acts)}"
            )
        for a in acts:
            _checks.check_name("activation", a, ACTIVATIONS)
        object.__setattr__(self, "sizes", tuple(int(s) for s in sizes))
        object.__setattr__(self, "activations", acts)

    def __hash__(self):
        # Looked up on every call (workspaces are keyed on the Net): computed once. Not pickled
        # (``__getstate__``): string hashes differ between processes.
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.sizes, self.activations))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self):
        # The fields only: the caches kept in __dict__ (the hash, cached properties, the kernel
        # inputs ``fastnn._codes`` keeps on a Net) are remade where they are needed.
        return {"sizes": self.sizes, "activations": self.activations}

    @property
    def n_layers(self):
        return len(self.sizes) - 1

    @cached_property
    def _shapes(self):
        return tuple(((m, n), (n,)) for m, n in zip(self.sizes[:-1], self.sizes[1:]))

    def shapes(self):
        """((W shape, b shape), ...) for every layer."""
        return self._shapes

    @cached_property
    def _weights(self):
        """Elements of all weight matrices: the multiply-adds of a forward per row."""
        return sum(m * n for m, n in zip(self.sizes[:-1], self.sizes[1:]))

    @cached_property
    def _largest_weight(self):
        """Elements of the largest weight matrix."""
        return max(m * n for m, n in zip(self.sizes[:-1], self.sizes[1:]))


def mlp(sizes, activation="relu", output="identity"):
    """A ``Net`` with ``activation`` on every hidden layer and ``output`` on the last layer."""
    sizes = tuple(sizes) if isinstance(sizes, (list, tuple)) else sizes
    if not isinstance(sizes, tuple):
        raise TypeError(f"mlp sizes must be a list or tuple of ints; got {type(sizes).__name__}")
    # For fewer than two sizes this builds a mismatched Net, whose own check names the sizes.
    return Net(sizes=sizes, activations=(activation,) * (len(sizes) - 2) + (output,))


def member_seeds(seed, members):
    """The seeds of an ensemble's ``members`` drawn from ``seed`` (an int, a Generator or None), as
    Python ints: member k of ``init(net, seed, members=K)`` is ``init(net, seed=member_seeds(seed,
    K)[k])``."""
    members = _checks.check_positive_int(members, "members")
    return [int(s) for s in _checks.rng_from(seed).integers(0, 2**63 - 1, size=members)]


def init(net, seed=0, dtype=np.float32, init="auto", members=None):
    """Fresh parameters for ``net``: ((W1, b1), (W2, b2), ...), biases zero; with ``members=K``, an
    ensemble's stacked params (W (K, fan_in, fan_out), b (K, fan_out)), member k drawn from the
    k-th of ``member_seeds(seed, K)``.

    W ~ N(0, 2 / fan_in) (he_normal), U(+-sqrt(6 / fan_in)) (he_uniform),
    N(0, 2 / (fan_in + fan_out)) (glorot_normal), U(+-sqrt(6 / (fan_in + fan_out))) (glorot_uniform),
    N(0, 1 / fan_in) (lecun_normal). ``init="auto"`` picks he_normal for relu, leaky_relu, elu,
    softplus, gelu and silu layers and glorot_uniform for identity, sigmoid and tanh layers.
    Weights are drawn in float64 and rounded, so float32 and float64 parameters from one seed agree.
    """
    if not isinstance(net, Net):
        raise TypeError(f"init expects a fastnn.Net as net; got {type(net).__name__}")
    if members is not None:
        each = [init_one(net, s, dtype, init) for s in member_seeds(seed, members)]
        return tuple((np.stack([p[l][0] for p in each]), np.stack([p[l][1] for p in each])) for l in range(len(net.activations)))
    return init_one(net, seed, dtype, init)


def init_one(net, seed, dtype, init):
    """``init`` of one network (``net`` checked)."""
    dt = _checks.check_dtype(dtype)
    _checks.check_name("init", init, INITS)
    rng = _checks.rng_from(seed)
    params = []
    for (fan_in, fan_out), act in zip(zip(net.sizes[:-1], net.sizes[1:]), net.activations):
        scheme = init
        if scheme == "auto":
            scheme = "he_normal" if act in _HE_FAMILY else "glorot_uniform"
        fan = fan_in if scheme.startswith(("he", "lecun")) else (fan_in + fan_out) / 2.0
        gain = 2.0 if scheme.startswith("he") else 1.0
        if scheme.endswith("normal"):
            W = rng.normal(0.0, np.sqrt(gain / fan), size=(fan_in, fan_out))
        else:
            limit = np.sqrt(3.0 * gain / fan)
            W = rng.uniform(-limit, limit, size=(fan_in, fan_out))
        params.append((np.ascontiguousarray(W, dtype=dt), np.zeros(fan_out, dtype=dt)))
    return tuple(params)
