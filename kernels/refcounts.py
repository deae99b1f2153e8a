"""CPython reference counts read at objects' addresses, for ``fastnn._buffers``' test of whether a
step's output buffer is free again (no one but fastnn holds it or any view or tuple of it).

``sys.getrefcount`` over the ~12 objects of a tiny net's SGD buffer took ~0.3 us of a ~3.4 us
Python side of ``train_step`` (Zen 4), ~0.8 us over Adam's ~32; this reads them in one call. The
count is the first field of a CPython object (``ob_refcnt``, a Py_ssize_t); ``fastnn._buffers``
checks that against ``sys.getrefcount`` before it relies on it (a free-threaded build lays the
header out otherwise). The caller keeps every object alive and holds the GIL, which this kernel
keeps (ROW_OPTIONS), so no count changes while it reads.
"""

from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

from ._config import ROW_OPTIONS, jit


@intrinsic
def _count_at(typingctx, address):
    """The int64 at ``address`` (an object's reference count)."""
    if not isinstance(address, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(builder.inttoptr(args[0], ir.IntType(64).as_pointer()))

    return types.int64(address), codegen


@jit(options=ROW_OPTIONS)
def counts_are(addresses, counts, record):
    """True when the objects at ``addresses`` (int64, ``id()`` of live objects) have ``counts``
    as their reference counts; with ``record``, the counts are written into ``counts`` first."""
    if addresses.size != counts.size:
        return False
    for i in range(addresses.size):
        count = _count_at(addresses[i])
        if record:
            counts[i] = count
        elif count != counts[i]:
            return False
    return True
