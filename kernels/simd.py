"""Explicit SIMD vectors in kernels: a Numba type for an LLVM ``<LANES x float>`` value and the
operations on it (load, store, masked load and store, broadcast, arithmetic, fused multiply-add,
compare and select, reduce).

A vector is an SSA value: LLVM keeps it in a register. Numba's plain loops leave accumulators that
live in arrays in memory (a local ``np.empty`` is never promoted to registers), and one scalar
temporary in a loop can stop LLVM from vectorising it; kernels that must run at the FMA units'
speed hold their accumulators in these vectors instead.

``LANES`` is the number of float32 lanes of the widest vector register the compile target has:
16 with AVX-512, 8 with AVX (and AVX2), 4 otherwise. A float64 vector has the same byte width, so
``lanes(dtype)`` is LANES for float32 and LANES / 2 for float64. The target is the host CPU, or the
one ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name; compiled code is cached per target CPU
(Numba's cache index holds the target), so a cache never serves one CPU's vector width to another.
Any width is correct on any CPU that runs the code: LLVM splits a vector wider than the registers.

Loads and stores address a flat, C-contiguous 1-D array by element index and do not check bounds:
the caller keeps ``i + lanes`` within the array, or uses the masked forms for a tail, which touch
only the first ``n`` lanes' memory.
"""

import numba
import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic, models, register_model

from ._config import jit, jit_inline

# CPU names LLVM knows that have AVX-512 (for a NUMBA_CPU_NAME given without NUMBA_CPU_FEATURES).
_AVX512_CPUS = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake", "tigerlake",
                "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids", "diamondrapids",
                "znver4", "znver5", "x86-64-v4")
_AVX_CPUS = ("sandybridge", "ivybridge", "haswell", "broadwell", "skylake", "alderlake", "raptorlake",
             "meteorlake", "arrowlake", "lunarlake", "gracemont", "bdver", "btver2", "znver1", "znver2",
             "znver3", "x86-64-v3")


def _target_lanes():
    """Float32 lanes of the compile target's widest vector register (see the module docstring)."""
    name, features = numba.config.CPU_NAME, numba.config.CPU_FEATURES
    if name is None and features is None:
        features = llvm.get_host_cpu_features().flatten()
    if features:
        enabled = {f[1:] for f in features.split(",") if f.startswith("+")}
        return 16 if "avx512f" in enabled else 8 if "avx" in enabled else 4
    if name in ("host", None):
        name = llvm.get_host_cpu_name()
    if name.startswith(_AVX512_CPUS):
        return 16
    return 8 if name.startswith(_AVX_CPUS) else 4


LANES = _target_lanes()


class Vector(types.Type):
    """A SIMD vector of ``lanes`` values of the float type ``dtype``."""

    def __init__(self, dtype, lanes):
        self.dtype = dtype
        self.lanes = lanes
        super().__init__(name=f"Vector({dtype} x {lanes})")


@register_model(Vector)
class _VectorModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(dmm.lookup(fe_type.dtype).get_value_type(), fe_type.lanes))


def lanes(dtype):
    """Lanes of a vector of ``dtype`` (a NumPy dtype or type, or a Numba float type): LANES for
    float32, LANES / 2 for float64."""
    size = dtype.bitwidth // 8 if isinstance(dtype, types.Float) else np.dtype(dtype).itemsize
    return LANES * 4 // size


@intrinsic
def width(typingctx, a):
    """In a kernel: the lanes of a vector of a's dtype (``lanes``), a constant of the compiled code.
    Not ``LANES * 4 // a.itemsize``: the itemsize is read from the array at run time, so that was
    a 64-bit division on every call, and every ``% w`` and ``// w`` after it another."""
    if not (isinstance(a, types.Array) and isinstance(a.dtype, types.Float)):
        return None
    n = lanes(a.dtype)
    return types.intp(a), lambda context, builder, signature, args: context.get_constant(types.intp, n)


def _vector_of(dtype):
    """The ``Vector`` type of a Numba float type."""
    return Vector(dtype, lanes(dtype))


def _is_flat(a):
    """A 1-D C-contiguous float array: the loads and stores index memory by element, so a strided
    array (layout "A") is refused while typing instead of read at the wrong addresses."""
    return isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and isinstance(a.dtype, types.Float)


def _element_pointer(context, builder, signature, args):
    """Pointer to a[i] for an intrinsic whose first two arguments are (a, i)."""
    data = context.make_array(signature.args[0])(context, builder, args[0]).data
    return builder.gep(data, [args[1]])


def _vector_pointer(context, builder, signature, args, vtype):
    """``_element_pointer`` as a pointer to a vector of ``vtype``."""
    pointer = _element_pointer(context, builder, signature, args)
    return builder.bitcast(pointer, context.get_value_type(vtype).as_pointer())


def _lane_mask(builder, n, count):
    """<count x i1>: lane k set when k < n."""
    i64 = ir.IntType(64)
    index = ir.Constant(ir.VectorType(i64, count), [ir.Constant(i64, k) for k in range(count)])
    n64 = builder.sext(n, i64) if n.type.width < 64 else n
    return builder.icmp_unsigned("<", index, _splat(builder, n64, count))


def _splat(builder, value, count):
    """<count x T> with every lane ``value``."""
    vtype = ir.VectorType(value.type, count)
    first = builder.insert_element(ir.Constant(vtype, ir.Undefined), value, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(first, ir.Constant(vtype, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), count), [0] * count))


@intrinsic
def vload(typingctx, a, i):
    """The vector a[i : i + lanes] of a flat array (no bounds check)."""
    if not (_is_flat(a) and isinstance(i, types.Integer)):
        return None
    vtype = _vector_of(a.dtype)

    def codegen(context, builder, signature, args):
        return builder.load(_vector_pointer(context, builder, signature, args, vtype), align=1,
                            typ=context.get_value_type(vtype))

    return vtype(a, i), codegen


@intrinsic
def vstore(typingctx, a, i, v):
    """a[i : i + lanes] <- v (no bounds check)."""
    if not (_is_flat(a) and isinstance(i, types.Integer) and isinstance(v, Vector) and v.dtype == a.dtype):
        return None

    def codegen(context, builder, signature, args):
        builder.store(args[2], _vector_pointer(context, builder, signature, args, v), align=1)
        return context.get_dummy_value()

    return types.void(a, i, v), codegen


def _suffix(vtype_ll):
    """LLVM's name mangling of a vector type: v8f32, v4f64, ..."""
    return f"v{vtype_ll.count}f{32 if isinstance(vtype_ll.element, ir.FloatType) else 64}"


def _vector_intrinsic(builder, name, vtype_ll, arity):
    """The LLVM intrinsic ``name`` on ``vtype_ll`` vectors, taking ``arity`` of them."""
    fnty = ir.FunctionType(vtype_ll, [vtype_ll] * arity)
    return cgutils.get_or_insert_function(builder.module, fnty, f"{name}.{_suffix(vtype_ll)}")


def _masked_intrinsic(builder, name, vtype_ll):
    pointer_type = vtype_ll.as_pointer()
    mask_type = ir.VectorType(ir.IntType(1), vtype_ll.count)
    if name == "load":
        fnty = ir.FunctionType(vtype_ll, [pointer_type, ir.IntType(32), mask_type, vtype_ll])
    else:
        fnty = ir.FunctionType(ir.VoidType(), [vtype_ll, pointer_type, ir.IntType(32), mask_type])
    return cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.{name}.{_suffix(vtype_ll)}.p0")


@intrinsic
def vload_first(typingctx, a, i, n):
    """The vector of a[i : i + n] in its first n lanes and zeros in the others, for 0 <= n <=
    lanes; reads only the memory of those n elements."""
    if not (_is_flat(a) and isinstance(i, types.Integer) and isinstance(n, types.Integer)):
        return None
    vtype = _vector_of(a.dtype)

    def codegen(context, builder, signature, args):
        vtype_ll = context.get_value_type(vtype)
        pointer = _vector_pointer(context, builder, signature, args, vtype)
        mask = _lane_mask(builder, args[2], vtype.lanes)
        load = _masked_intrinsic(builder, "load", vtype_ll)
        return builder.call(load, [pointer, ir.Constant(ir.IntType(32), 1), mask, ir.Constant(vtype_ll, None)])

    return vtype(a, i, n), codegen


@intrinsic
def vstore_first(typingctx, a, i, v, n):
    """a[i : i + n] <- the first n lanes of v, for 0 <= n <= lanes; writes only those n elements."""
    if not (_is_flat(a) and isinstance(i, types.Integer) and isinstance(v, Vector) and v.dtype == a.dtype
            and isinstance(n, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        vtype_ll = context.get_value_type(v)
        pointer = _vector_pointer(context, builder, signature, args, v)
        mask = _lane_mask(builder, args[3], v.lanes)
        store = _masked_intrinsic(builder, "store", vtype_ll)
        builder.call(store, [args[2], pointer, ir.Constant(ir.IntType(32), 1), mask])
        return context.get_dummy_value()

    return types.void(a, i, v, n), codegen


@intrinsic
def vbroadcast(typingctx, a, i):
    """A vector with every lane a[i] (a flat array; no bounds check, no negative-index wraparound)."""
    if not (_is_flat(a) and isinstance(i, types.Integer)):
        return None
    vtype = _vector_of(a.dtype)

    def codegen(context, builder, signature, args):
        return _splat(builder, builder.load(_element_pointer(context, builder, signature, args)), vtype.lanes)

    return vtype(a, i), codegen


@intrinsic
def vsplat(typingctx, x):
    """A vector with every lane x (a float32 or float64 scalar)."""
    if not isinstance(x, types.Float):
        return None
    vtype = _vector_of(x)

    def codegen(context, builder, signature, args):
        return _splat(builder, args[0], vtype.lanes)

    return vtype(x), codegen


def _lanewise(emit, doc):
    """An intrinsic f(a, b) on two vectors of one type: ``emit(builder, vtype_ll, args)`` builds it."""

    @intrinsic
    def op(typingctx, a, b):
        if not (isinstance(a, Vector) and a == b):
            return None

        def codegen(context, builder, signature, args):
            return emit(builder, context.get_value_type(a), args)

        return a(a, b), codegen

    op.__doc__ = doc
    return op


def _instruction(name):
    return lambda builder, vtype_ll, args: getattr(builder, name)(*args)


def _llvm_intrinsic(name):
    return lambda builder, vtype_ll, args: builder.call(_vector_intrinsic(builder, name, vtype_ll, 2), args)


vadd = _lanewise(_instruction("fadd"), "a + b, lane by lane.")
vsub = _lanewise(_instruction("fsub"), "a - b, lane by lane.")
vmul = _lanewise(_instruction("fmul"), "a * b, lane by lane.")
vdiv = _lanewise(_instruction("fdiv"), "a / b, lane by lane (IEEE division, as the scalar a / b).")
vmax = _lanewise(_llvm_intrinsic("llvm.maxnum"),
                 "max(a, b), lane by lane (IEEE maxNum: a NaN lane gives the other operand).")
vmin = _lanewise(_llvm_intrinsic("llvm.minnum"),
                 "min(a, b), lane by lane (IEEE minNum: a NaN lane gives the other operand).")


def _compare_select(predicate, doc):
    """An intrinsic f(a, b, x, y) = x where ``a predicate b`` (an ordered compare: false for NaN)
    else y, lane by lane, on four vectors of one type."""

    @intrinsic
    def op(typingctx, a, b, x, y):
        if not (isinstance(a, Vector) and a == b == x == y):
            return None

        def codegen(context, builder, signature, args):
            a, b, x, y = args
            return builder.select(builder.fcmp_ordered(predicate, a, b), x, y)

        return a(a, b, x, y), codegen

    op.__doc__ = doc
    return op


vselect_gt = _compare_select(">", "x where a > b else y, lane by lane (NaN in a or b gives y).")
vselect_ge = _compare_select(">=", "x where a >= b else y, lane by lane (NaN in a or b gives y).")


vcopysign = _lanewise(_llvm_intrinsic("llvm.copysign"), "|a| with the sign of b, lane by lane.")


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, lane by lane, with one rounding (the FMA instruction)."""
    if not (isinstance(a, Vector) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.call(_vector_intrinsic(builder, "llvm.fma", context.get_value_type(a), 3), args)

    return a(a, b, c), codegen


def _unary(name, doc):
    """An intrinsic f(v) on one vector: the LLVM intrinsic ``name`` lane by lane."""

    @intrinsic
    def op(typingctx, v):
        if not isinstance(v, Vector):
            return None

        def codegen(context, builder, signature, args):
            return builder.call(_vector_intrinsic(builder, name, context.get_value_type(v), 1), args)

        return v(v), codegen

    op.__doc__ = doc
    return op


vsqrt = _unary("llvm.sqrt", "sqrt(v), lane by lane (IEEE square root, as math.sqrt).")
vabs = _unary("llvm.fabs", "|v|, lane by lane.")
vround = _unary("llvm.rint", "v rounded to an integer, ties to even, lane by lane.")


@intrinsic
def vsum(typingctx, v):
    """The sum of v's lanes (in an order LLVM picks: the lanes are added pairwise)."""
    if not isinstance(v, Vector):
        return None

    def codegen(context, builder, signature, args):
        value, count = args[0], v.lanes
        while count > 1:  # fold the upper half onto the lower half
            half = count // 2
            lo = builder.shuffle_vector(value, value, ir.Constant(ir.VectorType(ir.IntType(32), half), list(range(half))))
            hi = builder.shuffle_vector(value, value, ir.Constant(ir.VectorType(ir.IntType(32), half),
                                                                  list(range(half, count))))
            value, count = builder.fadd(lo, hi), half
        return builder.extract_element(value, ir.Constant(ir.IntType(32), 0))

    return v.dtype(v), codegen


@intrinsic
def vlane(typingctx, v, k):
    """Lane k of v (k an int, 0 <= k < lanes)."""
    if not (isinstance(v, Vector) and isinstance(k, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.extract_element(args[0], args[1])

    return v.dtype(v, k), codegen


# The chains ``peak_fma`` keeps in flight: enough to cover the FMA latency on both pipes of the
# CPUs measured (4-cycle latency x 2 pipes needs 8; 12 leaves room).
PEAK_CHAINS = 12


@jit
def peak_fma(x, iterations):
    """Run ``iterations`` rounds of PEAK_CHAINS independent vector FMAs on values from x (a flat
    array of at least lanes elements); returns a value that depends on all of them, so that none
    is optimised away. FLOPs done: 2 * PEAK_CHAINS * lanes * iterations."""
    a = vload(x, 0)
    b = vsplat(x[0] * x.dtype.type(1e-7))
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = a
    for _ in range(iterations):
        c0 = vfma(c0, a, b)
        c1 = vfma(c1, a, b)
        c2 = vfma(c2, a, b)
        c3 = vfma(c3, a, b)
        c4 = vfma(c4, a, b)
        c5 = vfma(c5, a, b)
        c6 = vfma(c6, a, b)
        c7 = vfma(c7, a, b)
        c8 = vfma(c8, a, b)
        c9 = vfma(c9, a, b)
        c10 = vfma(c10, a, b)
        c11 = vfma(c11, a, b)
    total = vadd(vadd(vadd(c0, c1), vadd(c2, c3)), vadd(vadd(c4, c5), vadd(c6, c7)))
    return vsum(vadd(total, vadd(vadd(c8, c9), vadd(c10, c11))))


def _transposed(builder, rows, lanes):
    """The ``lanes`` vectors of a lanes x lanes block transposed, by log2(lanes) rounds of
    shuffles: in the round of distance s, rows i and i + s (i & s == 0) swap the lanes whose
    index has bit s set (lo takes a[p] or b[p - s], hi a[p + s] or b[p])."""
    i32 = ir.IntType(32)
    s = lanes // 2
    while s:
        lo_mask = [p if not p & s else lanes + p - s for p in range(lanes)]
        hi_mask = [p + s if not p & s else lanes + p for p in range(lanes)]
        for i in range(lanes):
            if not i & s:
                a, b = rows[i], rows[i + s]
                rows[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, lanes), lo_mask))
                rows[i + s] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, lanes), hi_mask))
        s //= 2
    return rows


@intrinsic
def transpose_block(typingctx, src, source, dst, target):
    """dst[t + j * t_stride + i] = src[s + i * s_stride + j] for i, j < lanes, where source = (s,
    s_stride) and target = (t, t_stride): one lanes x lanes block of a row-major matrix into
    another, transposed in registers. Flat arrays of one float type; no bounds check."""
    if not (_is_flat(src) and _is_flat(dst) and src.dtype == dst.dtype
            and all(isinstance(t, types.UniTuple) and t.count == 2 and isinstance(t.dtype, types.Integer)
                    for t in (source, target))):
        return None
    vtype = _vector_of(src.dtype)

    def codegen(context, builder, signature, args):
        vtype_ll = context.get_value_type(vtype)
        i64 = ir.IntType(64)

        def pointers(array_type, array, place, index_type):
            data = context.make_array(array_type)(context, builder, array).data
            start, stride = (context.cast(builder, builder.extract_value(place, k), index_type.dtype, types.int64)
                             for k in range(2))
            return [builder.bitcast(builder.gep(data, [builder.add(start, builder.mul(stride, ir.Constant(i64, k)))]),
                                    vtype_ll.as_pointer()) for k in range(vtype.lanes)]

        loaded = [builder.load(p, align=1, typ=vtype_ll) for p in pointers(src, args[0], args[1], source)]
        for value, p in zip(_transposed(builder, loaded, vtype.lanes), pointers(dst, args[2], args[3], target)):
            builder.store(value, p, align=1)
        return context.get_dummy_value()

    return types.void(src, source, dst, target), codegen
