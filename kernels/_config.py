"""The one place that sets Numba decorator options for every kernel.

``jit`` compiles a module-level kernel with the project's options; ``jit_inline`` does the same for
small scalar helpers that are always inlined into their callers.

- ``FASTMATH``: the LLVM flag set, never Numba's blanket fastmath switch, which also implies
  ``nnan``/``ninf`` and so deletes the NaN checks that keep NaN inputs propagating instead of
  turning into garbage.
- ``CACHE``: compiled machine code is cached on disk so a new process skips compilation. When no
  cache folder is writable (a read-only install, no writable home), ``jit`` compiles in memory,
  with a warning, instead of failing at import.
- ``CACHE_DIRS``: Numba keys a cached kernel on its own source file only, yet a kernel's machine
  code contains the kernels it calls from other files; after an edit to ``activations.py``, the
  cached ``network.py`` kernels would still run the old activations. Kernels are therefore cached
  under a folder named after a digest of every kernel source and the BLAS in use (``_blaslib``),
  so any edit, upgrade or change of BLAS starts a fresh cache. That folder is the first writable
  one of: inside ``NUMBA_CACHE_DIR`` when set, inside ``kernels/__pycache__``, inside the user's
  cache folder (``XDG_CACHE_HOME`` or ``~/.cache``, then ``fastnn``). Every one is keyed by the
  digest: the kernels use a cache locator of their own (``_DigestLocator``) in place of Numba's,
  whose fallbacks (the source's ``__pycache__``, the user-wide cache) are not.
"""

import hashlib
import os
import threading
import warnings

import numba
from numba.core import caching

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
DIGEST = _DIGEST  # names what belongs to these kernel sources (the cache folder, activations' table)
_FOLDER = f"numba-{_DIGEST}-{_blaslib.NAME}"


def _cache_dirs():
    roots = [os.environ.get("NUMBA_CACHE_DIR"), os.path.join(_HERE, "__pycache__"),
             os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
                          "fastnn")]
    return tuple(os.path.join(root, _FOLDER) for root in roots if root)


CACHE_DIRS = _cache_dirs()


class _DigestLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
    """Numba cache locator for the kernels: the first writable folder of CACHE_DIRS."""

    def __init__(self, py_func, py_file, folder):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = folder

    def get_cache_path(self):
        return self._cache_path

    @classmethod
    def from_function(cls, py_func, py_file):
        for folder in CACHE_DIRS:
            locator = cls(py_func, py_file, folder)
            try:
                locator.ensure_cache_path()
            except OSError:
                continue
            return locator
        return None


class _DigestCacheImpl(caching.CompileResultCacheImpl):
    _locator_classes = [_DigestLocator]


class _DigestFunctionCache(caching.FunctionCache):
    _impl_class = _DigestCacheImpl


def jit(fn=None, *, options=OPTIONS):
    """Compile ``fn`` with the project options (or ``options``), cached on disk (``CACHE_DIRS``)
    when a cache folder is writable. ``@jit`` or ``@jit(options=...)``."""
    if fn is None:
        return lambda f: jit(f, options=options)
    dispatcher = numba.njit(cache=False, **options)(fn)
    if CACHE:
        try:
            # What njit(cache=True) does (Dispatcher.enable_caching), with the kernels' locator.
            dispatcher._cache = _DigestFunctionCache(dispatcher.py_func)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            warnings.warn(
                f"fastnn kernels: on-disk cache unavailable ({exc}); compiling in memory. "
                "Set NUMBA_CACHE_DIR to a writable folder to keep compiled kernels.",
                RuntimeWarning,
                stacklevel=2,
            )
    return dispatcher


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
    Once compiled for the arguments' types and switched off, it is the plain call (the lock and
    the switching cost ~11 us a call).
    """
    if not getattr(kernel, "_can_compile", True):  # Dispatcher.disable_compile's flag
        try:
            return kernel(*args)
        except TypeError:  # not compiled for these types (kernels raise nothing themselves)
            pass
    with _compile_lock:
        kernel.disable_compile(False)
        try:
            return kernel(*args)
        finally:
            if kernel.signatures:  # none if this first compile failed: let its error through
                kernel.disable_compile(True)
