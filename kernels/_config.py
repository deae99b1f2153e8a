"""The one place that sets Numba decorator options for every kernel.

``jit`` compiles a module-level kernel with the project's options; ``jit_inline`` does the same for
small scalar helpers that are always inlined into their callers.

- ``FASTMATH``: the LLVM flag set, never ``fastmath=True``, which also implies ``nnan``/``ninf``
  and so deletes the NaN checks that keep NaN inputs propagating instead of turning into garbage.
- ``CACHE``: compiled machine code is cached on disk so a new process skips compilation. Numba
  raises at decoration time when no cache folder is writable (read-only install, no
  ``NUMBA_CACHE_DIR``); ``jit`` then falls back to an in-memory compile, with a warning, instead of
  failing at import.
"""

import warnings

import numba

FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
CACHE = True
OPTIONS = {"fastmath": set(FASTMATH), "nogil": True, "error_model": "numpy"}


def jit(fn):
    """Compile ``fn`` with the project options, cached on disk when a cache folder is writable."""
    if CACHE:
        try:
            return numba.njit(cache=True, **OPTIONS)(fn)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            warnings.warn(
                f"fastnn kernels: on-disk cache unavailable ({exc}); compiling in memory. "
                "Set NUMBA_CACHE_DIR to a writable folder to keep compiled kernels.",
                RuntimeWarning,
                stacklevel=2,
            )
    return numba.njit(cache=False, **OPTIONS)(fn)


def jit_inline(fn):
    """Compile a scalar helper that is inlined into every kernel calling it (never called from Python)."""
    return numba.njit(inline="always", **OPTIONS)(fn)
