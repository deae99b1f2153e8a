"""Views into C-contiguous arrays by element offset, for kernels that cut one workspace into many
arrays: ``flat(a, at, n)`` is a[at : at + n] of a's memory as a 1-D array, ``matrix(a, at, rows,
cols)`` the same memory as (rows, cols).

Numba's ``reshape`` calls a C helper (``numba_attempt_nocopy_reshape``) on every use: about 60 of
them made a fifth of the fused tiny train step (perf). These build the array header directly over
a's memory. Nothing is checked: the caller keeps at + size within a and a C-contiguous.

The views borrow: they take no reference to a's memory (their meminfo is null), where a slice
takes one and drops it after its last use, two atomic operations. Those made half the fixed cost
of the one-sample forward kernel: 6 one-unit layers in a compiled loop, float32, Emerald Rapids,
624 -> 316 ns. So a view must not outlive the array it is cut from: cut it from an argument of
the kernel (the caller holds those through the call), or from an array the kernel allocated and
names in a ``hold`` after the views' last use (Numba frees an array after its variable's last
use). A view is never returned to Python.

``whole(a)`` is all of a as a flat 1-D view. ``aligned_empty(n, like)`` is an uninitialised 1-D
array of like's dtype whose first element sits on a cache-line boundary, so that a workspace cut
at offsets that are whole vectors never has a vector load straddle two lines; it owns its memory.

``borrow(value)`` is a kernel's argument (an array or a tuple of them) with every array borrowed,
so that binding it in inlined helpers takes no references. ``array_at(pairs, k)`` is array k of a
params-shaped tuple ((W, b), ...), flat, for loops over every array of a net.
``param_sets(flat, shapes, offsets, firsts)`` is the other way: params-shaped tuples of views into
one flat buffer, which a kernel takes in place of many arrays. ``member_views(stacked, k)`` is
member k of an ensemble's arrays (every array of a tuple, at any depth, without its leading axis).
"""

import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from ._config import jit_inline
from .stream import LINE_BYTES, line_offset


def _view(context, builder, source_type, source, at, shape, result_type, owns=False):
    """The array header of result_type over source's memory from element ``at``, C strides:
    borrowed (no reference taken, null meminfo and parent), or sharing source's reference when
    ``owns``."""
    src = make_array(source_type)(context, builder, source)
    itemsize = context.get_constant(types.intp, context.get_abi_sizeof(context.get_data_type(source_type.dtype)))
    strides, stride = [], itemsize
    for extent in reversed(shape):
        strides.insert(0, stride)
        stride = builder.mul(stride, extent)
    out = make_array(result_type)(context, builder)
    populate_array(out, data=builder.gep(src.data, [at]), shape=shape, strides=strides, itemsize=itemsize,
                   meminfo=src.meminfo if owns else None, parent=None)
    result = out._getvalue()
    if owns:
        context.nrt.incref(builder, result_type, result)
    return result


def _is_c_array(a):
    return isinstance(a, types.Array) and a.layout == "C"


def _flat_signature(a, at, n, owns):
    if not (_is_c_array(a) and isinstance(at, types.Integer) and isinstance(n, types.Integer)):
        return None
    result_type = types.Array(a.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        start, size = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:]))
        return _view(context, builder, signature.args[0], args[0], start, [size], result_type, owns)

    return result_type(a, at, n), codegen


@intrinsic
def flat(typingctx, a, at, n):
    """a's elements at .. at + n - 1 (in memory order) as a 1-D C array borrowing a's memory."""
    return _flat_signature(a, at, n, owns=False)


@intrinsic
def _owning_flat(typingctx, a, at, n):
    """``flat`` holding a reference of its own, which keeps a's memory alive (``aligned_empty``)."""
    return _flat_signature(a, at, n, owns=True)


def _borrowable(t):
    """True when t is made of arrays, numbers and booleans only (tuples at any depth): anything
    else may hold a reference, which the caller would then drop once too often."""
    if isinstance(t, types.BaseTuple):
        return all(_borrowable(e) for e in t)
    return isinstance(t, (types.Array, types.Number, types.Boolean))


def _borrow_value(context, builder, t, value):
    """``value`` of type t with every array's meminfo and parent null."""
    if isinstance(t, types.Array):
        array = make_array(t)(context, builder, value)
        array.meminfo = cgutils.get_null_value(array.meminfo.type)
        array.parent = cgutils.get_null_value(array.parent.type)
        return array._getvalue()
    if isinstance(t, types.BaseTuple):
        for i, e in enumerate(t):
            value = builder.insert_value(value, _borrow_value(context, builder, e, builder.extract_value(value, i)), i)
    return value


@intrinsic
def borrow(typingctx, value):
    """``value`` (an array, or a tuple of arrays and scalars at any depth) with every array
    borrowed: the same memory, shape and strides, no reference taken (null meminfo and parent).
    Numba takes and drops a reference to each array of a tuple it binds, unpacks or picks from
    (two atomic operations each); for borrowed arrays those come to nothing. Only for a
    kernel's arguments, which the caller holds through the call, and never returned to Python."""
    if not _borrowable(value):
        return None

    def codegen(context, builder, signature, args):
        return _borrow_value(context, builder, signature.args[0], args[0])

    return value(value), codegen


@intrinsic
def hold(typingctx, a):
    """Does nothing, as a use of a: Numba frees an array after its variable's last use, so a kernel
    names the array it allocated here, after the last use of the views it cut from it."""
    if not isinstance(a, types.Array):
        return None
    return types.none(a), lambda context, builder, signature, args: context.get_dummy_value()


@intrinsic
def matrix(typingctx, a, at, rows, cols):
    """a's elements from ``at`` as a (rows, cols) C array borrowing a's memory."""
    if not (_is_c_array(a) and all(isinstance(v, types.Integer) for v in (at, rows, cols))):
        return None
    result_type = types.Array(a.dtype, 2, "C")

    def codegen(context, builder, signature, args):
        start, r, c = (context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], signature.args[1:]))
        return _view(context, builder, signature.args[0], args[0], start, [r, c], result_type)

    return result_type(a, at, rows, cols), codegen


@jit_inline
def whole(a):
    """All of a's elements (a C-contiguous array) as a flat 1-D view."""
    return flat(a, 0, a.size)


@intrinsic
def array_at(typingctx, pairs, k):
    """Array k of a params-shaped tuple ((W, b), ...) as a flat 1-D view: W of layer k // 2 for
    even k, its b for odd k; k outside [0, 2 len(pairs)) gives the last b.

    An intrinsic, not a jitted helper: a tuple passed to an inlined function is bound to a new
    variable there, which takes a reference to each of its arrays and drops it after, two atomic
    operations per array for every access (a 6-layer net: 24 for one array, ~1 us per array of
    the optimizer update with its 9 tuples, float32, Zen 2). Here the tuple is only read."""
    if not (isinstance(pairs, types.BaseTuple) and len(pairs) > 0 and isinstance(k, types.Integer)
            and all(isinstance(pair, types.BaseTuple) and len(pair) == 2 and all(map(_is_c_array, pair))
                    for pair in pairs)):
        return None
    result_type = types.Array(pairs[0][0].dtype, 1, "C")

    def codegen(context, builder, signature, args):
        pairs_type = signature.args[0]
        value, index = args
        result = cgutils.alloca_once(builder, context.get_value_type(result_type))
        end = builder.append_basic_block("array_at.end")
        arms = []
        for layer, pair_type in enumerate(pairs_type):
            for part, array_type in enumerate(pair_type):
                arm = builder.append_basic_block(f"array_at.{layer}.{part}")
                arms.append(arm)
                with builder.goto_block(arm):
                    array = builder.extract_value(builder.extract_value(value, layer), part)
                    size = make_array(array_type)(context, builder, array).nitems
                    builder.store(_view(context, builder, array_type, array, context.get_constant(types.intp, 0),
                                        [size], result_type), result)
                    builder.branch(end)
        switch = builder.switch(index, arms[-1])
        for case, arm in enumerate(arms):
            switch.add_case(ir.Constant(index.type, case), arm)
        builder.position_at_end(end)
        return builder.load(result)

    return result_type(pairs, k), codegen


@intrinsic
def param_sets(typingctx, flat, shapes, offsets, firsts):
    """A tuple of len(firsts) params-shaped tuples ((W, b), ...) of views into ``flat``: in set j,
    layer l's W is the (shapes[l][0], shapes[l][1]) C array from element offsets[firsts[j] + 2 l]
    and its b the shapes[l][1] elements from offsets[firsts[j] + 2 l + 1].

    shapes: a tuple of (n_in, n_out) int pairs, one per layer; firsts: a tuple of ints (their
    number is the number of sets, fixed while compiling). Nothing is checked: the caller keeps
    every view within flat (``fastnn._buffers.PackedSets`` lays the buffer out)."""
    if not (_is_c_array(flat) and flat.ndim == 1 and isinstance(shapes, types.UniTuple) and len(shapes) > 0
            and isinstance(shapes.dtype, types.UniTuple) and len(shapes.dtype) == 2
            and isinstance(shapes.dtype.dtype, types.Integer) and _is_c_array(offsets)
            and isinstance(offsets.dtype, types.Integer) and isinstance(firsts, types.UniTuple)
            and isinstance(firsts.dtype, types.Integer)):
        return None
    pair_type = types.Tuple((types.Array(flat.dtype, 2, "C"), types.Array(flat.dtype, 1, "C")))
    set_type = types.UniTuple(pair_type, len(shapes))
    result_type = types.UniTuple(set_type, len(firsts))

    def codegen(context, builder, signature, args):
        flat_type, shapes_type, offsets_type, firsts_type = signature.args
        flat_value, shapes_value, offsets_value, firsts_value = args
        offsets_array = make_array(offsets_type)(context, builder, offsets_value)
        intp = context.get_value_type(types.intp)

        def offset(index):
            at = builder.load(builder.gep(offsets_array.data, [index]))
            return context.cast(builder, at, offsets_type.dtype, types.intp)

        sets = []
        for j in range(len(firsts_type)):
            first = context.cast(builder, builder.extract_value(firsts_value, j), firsts_type.dtype, types.intp)
            pairs = []
            for layer in range(len(shapes_type)):
                shape = builder.extract_value(shapes_value, layer)
                n_in, n_out = (context.cast(builder, builder.extract_value(shape, i), shapes_type.dtype.dtype,
                                            types.intp) for i in range(2))
                w_at = offset(builder.add(first, ir.Constant(intp, 2 * layer)))
                b_at = offset(builder.add(first, ir.Constant(intp, 2 * layer + 1)))
                W = _view(context, builder, flat_type, flat_value, w_at, [n_in, n_out], pair_type[0])
                b = _view(context, builder, flat_type, flat_value, b_at, [n_out], pair_type[1])
                pairs.append(context.make_tuple(builder, pair_type, [W, b]))
            sets.append(context.make_tuple(builder, set_type, pairs))
        return context.make_tuple(builder, result_type, sets)

    return result_type(flat, shapes, offsets, firsts), codegen


def _member_type(t):
    """The type of member k of t: every C array of t one axis shorter (None if any is not)."""
    if isinstance(t, types.BaseTuple):
        inner = [_member_type(e) for e in t]
        return None if any(e is None for e in inner) else types.Tuple(inner)
    if _is_c_array(t) and t.ndim >= 2:
        return types.Array(t.dtype, t.ndim - 1, "C")
    return None


def _member_value(context, builder, t, result_type, value, k):
    """Member k's views of value (type t), as ``member_views`` makes them."""
    if isinstance(t, types.BaseTuple):
        items = [_member_value(context, builder, e, r, builder.extract_value(value, i), k)
                 for i, (e, r) in enumerate(zip(t, result_type))]
        return context.make_tuple(builder, result_type, items)
    array = make_array(t)(context, builder, value)
    shape = cgutils.unpack_tuple(builder, array.shape, t.ndim)[1:]
    size = context.get_constant(types.intp, 1)
    for extent in shape:
        size = builder.mul(size, extent)
    return _view(context, builder, t, value, builder.mul(k, size), shape, result_type)


@intrinsic
def member_views(typingctx, stacked, k):
    """Member k of stacked arrays: ``stacked`` an array, or a tuple of them at any depth (an
    ensemble's params ((W, b), ...) with W (K, fan_in, fan_out), or a tuple of such sets), each C
    and at least 2-D; the result has the same structure, each array a[k] as a borrowed C view.
    Nothing is checked: the caller keeps 0 <= k < K."""
    result_type = _member_type(stacked)
    if result_type is None or not isinstance(k, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        return _member_value(context, builder, signature.args[0], signature.return_type, args[0], index)

    return result_type(stacked, k), codegen


@jit_inline
def aligned_empty(n, like):
    """np.empty(n) of like's dtype starting on a cache-line boundary (a view of a slightly larger
    block, holding the reference to it)."""
    raw = np.empty(n + LINE_BYTES // like.itemsize, dtype=like.dtype)
    return _owning_flat(raw, (LINE_BYTES - line_offset(raw)) % LINE_BYTES // raw.itemsize, n)


@jit_inline
def copy_into(out, a):
    """out[i, j] = a[i, j] for two 2-D arrays of a's shape (out may be larger). A loop, not
    ``out[...] = a``: Numba's slice assignment from an array compiles its shape-mismatch message
    (string formatting in nopython mode) into the kernel, 4-6 s of the first compile."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            out[i, j] = a[i, j]
