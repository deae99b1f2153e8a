"""Cache control: non-temporal ("streaming") stores, for kernels whose outputs are too big for the
caches, and prefetches, for rows a kernel will read soon from scattered places.

A plain store to a cache line that is not in the cache first reads that line from memory, so a
loop writing a large output moves every output byte twice. A non-temporal store writes whole
64-byte lines straight to memory without reading them. LLVM emits one only when told to (the
``!nontemporal`` mark on a store) and, in a vectorised loop, only for vector stores it can prove
aligned to their width, which it cannot for Numba arrays; so ``stream_block`` builds the 64-byte
vector store itself and leaves the alignment to its caller.

Measured on the large benchmark net's Adam update (8.4M float32 params; reads p, g, m, v, writes
p, m, v): 17.6-18.3 ms with plain stores, 13.2-14.0 ms computing 64 KiB of each output at a time
into scratch rows and streaming each finished row out (``kernels.optim._update_matrix``).
For arrays that fit in the caches, streaming is slower: the next step would find them in memory
instead of in cache (see ``kernels.optim.STREAM_MIN_BYTES``).
"""

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ._config import jit_inline

LINE_BYTES = 64  # one cache line: the unit of a streaming store, and its required alignment


@intrinsic
def stream_block(typingctx, dst, i, src):
    """dst[i : i + w] <- src[0 : w] with one non-temporal store, w = 64 bytes / itemsize.

    The caller guarantees that &dst[i] is 64-byte aligned and that both ranges are in bounds: the
    store is an aligned vector store, which faults on a misaligned address.
    """
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.ndim == src.ndim == 1
            and dst.dtype == src.dtype and isinstance(dst.dtype, types.Float) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        dst_ty, _, src_ty = signature.args
        out = context.make_array(dst_ty)(context, builder, args[0])
        inp = context.make_array(src_ty)(context, builder, args[2])
        elem = context.get_value_type(dst_ty.dtype)
        vec = ir.VectorType(elem, LINE_BYTES // context.get_abi_sizeof(elem))
        value = builder.load(builder.bitcast(inp.data, vec.as_pointer()), align=1, typ=vec)
        target = builder.bitcast(builder.gep(out.data, [args[1]]), vec.as_pointer())
        store = builder.store(value, target, align=LINE_BYTES)
        store.set_metadata("nontemporal", builder.module.add_metadata([ir.IntType(32)(1)]))
        return context.get_dummy_value()

    return types.void(dst, i, src), codegen


@intrinsic
def store_fence(typingctx):
    """A full memory fence: streaming stores are weakly ordered, so a kernel that streamed ends
    with one before anything else (another thread) may read what it wrote."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@jit_inline
def line_offset(a):
    """Bytes from the last 64-byte boundary to a's first element."""
    return a.ctypes.data % LINE_BYTES


@jit_inline
def stream_into(dst, lo, src, n):
    """dst[lo : lo + n] <- src[:n] by streaming stores; &dst[lo] 64-byte aligned, n a whole number
    of lines."""
    w = LINE_BYTES // dst.itemsize
    for k in range(0, n, w):
        stream_block(dst, lo + k, src[k:])


@intrinsic
def _prefetch(typingctx, a, r, c):
    """Asks for the cache line holding a[r, c] (a 2-D array) to be brought into every cache level.
    A hint: it never faults, even for an index out of bounds, and changes no value."""
    if not (isinstance(a, types.Array) and a.ndim == 2 and isinstance(r, types.Integer) and isinstance(c, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        index = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:])]
        pointer = cgutils.get_item_pointer(context, builder, signature.args[0], array, index, wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        hint = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0")
        # read (0), keep in all levels (locality 3), data cache (1)
        builder.call(hint, [builder.bitcast(pointer, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(a, r, c), codegen


@jit_inline
def prefetch_rows(a, rows, lo, hi):
    """Prefetches the rows a[rows[lo:hi]] of a C-contiguous 2-D array, line by line, the line of
    a row's last element too (a row need not start on a line)."""
    step = LINE_BYTES // a.itemsize
    last = a.shape[1] - 1
    for i in range(lo, hi):
        for c in range(0, last, step):
            _prefetch(a, rows[i], c)
        _prefetch(a, rows[i], last)
