"""Calling a compiled kernel through the entry point of one of its signatures, past Numba's
dispatcher.

A call through a Numba dispatcher types every argument first (``typeof``, into every tuple) and
looks the signature up; only then does the compiled code's entry point unbox the arguments and
run. For the hottest calls that typing is a large part of the call: 0.35-0.4 us of the
Predictor's one-sample call on the tiny net (4 arrays; 2.0 -> 1.65 us for the kernel call), ~1 us
of the fused train step's (7 arguments, nested tuples; paired medians, float32, Emerald Rapids,
the other vCPU busy).

The entry point does not check what it is given: it unboxes each argument as its signature says,
and Numba's unboxing of an array does not compare dtypes, so an array of another dtype or rank
would be read as the signature's (a memory error). A caller takes an entry point only where it has
established the exact argument types itself, and keeps one per set of checked facts that fixes
them (``entry_point``'s callers say which).
"""

from numba import typeof
from numba.core.typing.typeof import Purpose

# ndarray.flags.num bits of a plain array: C-contiguous, aligned and writeable. Numba types such
# an array as Array(dtype, ndim, "C"), mutable and aligned; any other is another type. Callers test
# ``(a.flags.num & PLAIN_FLAGS) == PLAIN_FLAGS`` in line (a function call would cost more than it).
PLAIN_FLAGS = 0x1 | 0x100 | 0x400  # NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED | NPY_ARRAY_WRITEABLE


def entry_point(kernel, args):
    """The callable running ``kernel``'s compiled code for exactly the Numba types of ``args``
    without typing its arguments again, or ``kernel`` itself when no such signature is compiled
    (or this Numba keeps no entry points): calling the result is then the checked call."""
    try:
        signature = tuple(typeof(a, Purpose.argument) for a in args)
        return kernel.overloads[signature].entry_point
    except (KeyError, AttributeError, ValueError):
        return kernel
