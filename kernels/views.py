"""Views into C-contiguous arrays by element offset, for kernels that cut one workspace into many
arrays: ``flat(a, at, n)`` is a[at : at + n] of a's memory as a 1-D array, ``matrix(a, at, rows,
cols)`` the same memory as (rows, cols).

Numba's ``reshape`` calls a C helper (``numba_attempt_nocopy_reshape``) on every use: about 60 of
them made a fifth of the fused tiny train step (perf). These build the array header directly and
share a's memory (its reference count is taken, as a slice does). Nothing is checked: the caller
keeps at + size within a and a C-contiguous.
"""

from numba.core import types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array


def _view(context, builder, source_type, source, at, shape, result_type):
    """The array header of result_type over source's memory from element ``at``, C strides."""
    src = make_array(source_type)(context, builder, source)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(source_type.dtype)))
    strides, stride = [], itemsize
    for extent in reversed(shape):
        strides.insert(0, stride)
        stride = builder.mul(stride, extent)
    out = make_array(result_type)(context, builder)
    populate_array(out, data=builder.gep(src.data, [at]), shape=shape, strides=strides, itemsize=itemsize,
                   meminfo=src.meminfo, parent=src.parent)
    result = out._getvalue()
    context.nrt.incref(builder, result_type, result)
    return result


def _is_c_array(a):
    return isinstance(a, types.Array) and a.layout == "C"


@intrinsic
def flat(typingctx, a, at, n):
    """a's elements at .. at + n - 1 (in memory order) as a 1-D C array sharing a's memory."""
    if not (_is_c_array(a) and isinstance(at, types.Integer) and isinstance(n, types.Integer)):
        return None
    result_type = types.Array(a.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        start, size = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:]))
        return _view(context, builder, signature.args[0], args[0], start, [size], result_type)

    return result_type(a, at, n), codegen


@intrinsic
def matrix(typingctx, a, at, rows, cols):
    """a's elements from ``at`` as a (rows, cols) C array sharing a's memory."""
    if not (_is_c_array(a) and all(isinstance(v, types.Integer) for v in (at, rows, cols))):
        return None
    result_type = types.Array(a.dtype, 2, "C")

    def codegen(context, builder, signature, args):
        start, r, c = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:]))
        return _view(context, builder, signature.args[0], args[0], start, [r, c], result_type)

    return result_type(a, at, rows, cols), codegen
