"""The one place that sets Numba decorator options for every kernel.

``jit`` compiles a module-level kernel with the project's options; ``jit_inline`` does the same for
small scalar helpers that are always inlined into their callers.

- ``FASTMATH``: the LLVM flag set, never Numba's blanket fastmath switch, which also implies
  ``nnan``/``ninf`` and so deletes the NaN checks that keep NaN inputs propagating instead of
  turning into garbage.
- ``CACHE``: compiled machine code is cached on disk so a new process skips compilation. Numba
  raises at decoration time when no cache folder is writable (read-only install, no
  ``NUMBA_CACHE_DIR``); ``jit`` then falls back to an in-memory compile, with a warning, instead of
  failing at import.
- ``CACHE_DIR``: Numba keys a cached kernel on its own source file only, yet a kernel's machine
  code contains the kernels it calls from other files; after an edit to ``activations.py``, the
  cached ``network.py`` kernels would still run the old activations. Kernels are therefore cached
  under a folder named after a digest of every kernel source and the BLAS in use (``_blaslib``;
  inside ``NUMBA_CACHE_DIR`` when set, else ``kernels/__pycache__``), so any edit, upgrade or change
  of BLAS starts a fresh cache.
"""

import hashlib
import os
import threading
import warnings

import numba

from . import _blaslib

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
CACHE = True
OPTIONS = {"fastmath": set(FASTMATH), "nogil": True, "error_model": "numpy"}
# For code whose accuracy rests on the order of its roundings (the range reductions in ``vmath``).
# "reassoc" would let LLVM fold (x - n c_hi) - n c_lo into x - n (c_hi + c_lo) and (p 2^a) 2^b into
# p 2^(a + b); compiled with it, seven of the accuracy tests in tests/test_vmath.py fail.
ORDERED_OPTIONS = {**OPTIONS, "fastmath": set(FASTMATH - {"reassoc"})}
# For the optimizer updates: plain IEEE arithmetic. With "contract", LLVM fuses a multiply into a
# neighbouring add where it sees fit, and it saw fit differently in two compiled copies of one
# update loop (SGD with momentum came out 1 ulp apart on 6% of the elements), so an update's
# result would depend on which kernel ran it. An update is bound by memory, not by arithmetic.
EXACT_OPTIONS = {**OPTIONS, "fastmath": set()}
# For the one-sample forward of small nets: it keeps the GIL. Releasing and taking it back costs
# ~0.1 us of a ~2 us call (tiny net, one thread), and a call this short gains nothing from running
# beside other threads.
ROW_OPTIONS = {**OPTIONS, "nogil": False}


def _sources_digest():
    here = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            with open(os.path.join(here, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return here, digest.hexdigest()[:16]


_HERE, _DIGEST = _sources_digest()
CACHE_DIR = os.path.join(os.environ.get("NUMBA_CACHE_DIR") or os.path.join(_HERE, "__pycache__"),
                         f"numba-{_DIGEST}-{_blaslib.NAME}")


def jit(fn=None, *, options=OPTIONS):
    """Compile ``fn`` with the project options (or ``options``), cached on disk when a cache folder
    is writable. ``@jit`` or ``@jit(options=...)``."""
    if fn is None:
        return lambda f: jit(f, options=options)
    if CACHE:
        # Numba picks the cache folder when the function is decorated; point it at CACHE_DIR for
        # this decoration only, leaving the process-wide setting as the user had it.
        saved = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = CACHE_DIR
        try:
            return numba.njit(cache=True, **options)(fn)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            warnings.warn(
                f"fastnn kernels: on-disk cache unavailable ({exc}); compiling in memory. "
                "Set NUMBA_CACHE_DIR to a writable folder to keep compiled kernels.",
                RuntimeWarning,
                stacklevel=2,
            )
        finally:
            numba.config.CACHE_DIR = saved
    return numba.njit(cache=False, **options)(fn)


def jit_inline(fn):
    """Compile a scalar helper that is inlined into every kernel calling it (never called from Python)."""
    return numba.njit(inline="always", **OPTIONS)(fn)


_compile_lock = threading.Lock()


def call_compiling(kernel, *args):
    """``kernel(*args)``, compiling ``kernel`` for these argument types first if needed, and then
    switching its compilation off (``Dispatcher.disable_compile``).

    A kernel called only through this (and plainly once compiled) never compiles on a plain call:
    for argument types it has not been compiled for (another dtype, a read-only or strided array,
    a list, a tuple of another length or of mixed arrays), the call raises TypeError at once. So
    the call itself checks the argument types, in C, and a kernel that also checks its shapes can
    be handed arguments no Python code has looked at. The on-disk cache is read here too.
    """
    with _compile_lock:
        kernel.disable_compile(False)
        try:
            return kernel(*args)
        finally:
            if kernel.signatures:  # none if this first compile failed: let its error through
                kernel.disable_compile(True)
