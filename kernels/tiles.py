"""Register-tiled matrix products on transposed blocks: batch rows in the vector lanes.

The fused kernels for small nets (``docs/fused-kernels.md``) keep a block's activations as
(features, rows) arrays, the rows padded to a whole number of vectors (``rp``, a multiple of the
lanes of ``simd``). Every product of a layer then has one form,

    C^T[q, r] (+)= sum over p of A(p, q) B^T[p, r],    A(p, q) = a[p s_sum + q s_out],

with a scalar A broadcast and B^T loaded a vector of rows at a time: the forward z^T = W^T h^T
(A = W, s_sum = n_out, s_out = 1) and the backward dh^T = W dz^T (A = W, s_sum = 1, s_out = n_out),
without a transposed copy of W; and dW = h^T dz with the roles swapped (A = h^T, s_sum = 1,
s_out = rp; B^T = dz in row layout, its width padded to the lanes; C^T = dW padded alike).

All arrays are flat and C-contiguous: B^T (K x rp), C^T (N x rp); a holds A for every (p, q) the
strides address. A tile's 12 accumulators are held in registers (16 accumulators and the loads
spill on a 16-register CPU: float32, Zen 2, one thread, 64x128 by 64 rows, 4 x 4 ran at 23.8
GFLOP/s against 46.4 for 4 x 3). The row vectors go in pairs, each pair by tiles of 6 outputs
(12 FMAs per 2 loads and 6 broadcasts); an odd last vector by tiles of 12 outputs. Pairs rather
than the 4 x 3 tile used first, because a batch of 32 float32 rows is 4 vectors: 4 x 3 tiles
computed 6 for 4 and ran the 64x64 products of the tiny net at 60 GFLOP/s (see the module
``fused``). With AVX-512's 32 vector registers, row vectors go by fours first (``QUADS``: tiles
of 6 outputs x 4 vectors, 24 accumulators), which halves the tile's fixed cost (its setup, the
stores) per FMA. At the edges a tile's output indices are clamped to valid memory and only its
valid part is stored. A single output (a regression head) takes a tile of its own, its sum in
three chains per row vector (``_single_output``).
"""

from . import simd
from ._config import jit, jit_inline


@jit_inline
def _store(c_t, at, v, add):
    if add:
        v = simd.vadd(v, simd.vload(c_t, at))
    simd.vstore(c_t, at, v)


@jit_inline
def _start(bias, q, zero):
    """The accumulators' start for output q: bias[q], or zero without a bias."""
    return simd.vbroadcast(bias, q) if bias.size else zero


@jit_inline
def _frame(a, b_t, c_t, rp, v0):
    """(lanes, K summed rows, N outputs, first row of vector v0, a zero vector) for the tiles."""
    w = simd.width(a)
    return w, b_t.size // rp, c_t.size // rp, v0 * w, simd.vsplat(a.dtype.type(0.0))


@jit_inline
def _next_five(q0, n):
    """The outputs q0 + 1 to q0 + 5 of a 6-output tile, clamped to the last output n - 1."""
    return min(q0 + 1, n - 1), min(q0 + 2, n - 1), min(q0 + 3, n - 1), min(q0 + 4, n - 1), min(q0 + 5, n - 1)


@jit_inline
def _pairs(a, strides, b_t, c_t, rp, add, bias, v0):
    """Row vectors v0 and v0 + 1 of every output, by tiles of 6 outputs (see the module docstring)."""
    s_sum, s_out = strides
    w, k, n, r0, zero = _frame(a, b_t, c_t, rp, v0)
    for q0 in range(0, n, 6):
        q1, q2, q3, q4, q5 = _next_five(q0, n)
        c00 = c01 = _start(bias, q0, zero)
        c10 = c11 = _start(bias, q1, zero)
        c20 = c21 = _start(bias, q2, zero)
        c30 = c31 = _start(bias, q3, zero)
        c40 = c41 = _start(bias, q4, zero)
        c50 = c51 = _start(bias, q5, zero)
        for p in range(k):
            h0 = simd.vload(b_t, p * rp + r0)
            h1 = simd.vload(b_t, p * rp + r0 + w)
            at = p * s_sum
            x = simd.vbroadcast(a, at + q0 * s_out)
            c00, c01 = simd.vfma(x, h0, c00), simd.vfma(x, h1, c01)
            x = simd.vbroadcast(a, at + q1 * s_out)
            c10, c11 = simd.vfma(x, h0, c10), simd.vfma(x, h1, c11)
            x = simd.vbroadcast(a, at + q2 * s_out)
            c20, c21 = simd.vfma(x, h0, c20), simd.vfma(x, h1, c21)
            x = simd.vbroadcast(a, at + q3 * s_out)
            c30, c31 = simd.vfma(x, h0, c30), simd.vfma(x, h1, c31)
            x = simd.vbroadcast(a, at + q4 * s_out)
            c40, c41 = simd.vfma(x, h0, c40), simd.vfma(x, h1, c41)
            x = simd.vbroadcast(a, at + q5 * s_out)
            c50, c51 = simd.vfma(x, h0, c50), simd.vfma(x, h1, c51)
        for qq in range(min(6, n - q0)):
            c0, c1 = ((c00, c01) if qq == 0 else (c10, c11) if qq == 1 else (c20, c21) if qq == 2
                      else (c30, c31) if qq == 3 else (c40, c41) if qq == 4 else (c50, c51))
            base = (q0 + qq) * rp + r0
            _store(c_t, base, c0, add)
            _store(c_t, base + w, c1, add)


@jit_inline
def _quads(a, strides, b_t, c_t, rp, add, bias, v0):
    """Row vectors v0 to v0 + 3 of every output, by tiles of 6 outputs (24 accumulators)."""
    s_sum, s_out = strides
    w, k, n, r0, zero = _frame(a, b_t, c_t, rp, v0)
    for q0 in range(0, n, 6):
        q1, q2, q3, q4, q5 = _next_five(q0, n)
        c00 = c01 = c02 = c03 = _start(bias, q0, zero)
        c10 = c11 = c12 = c13 = _start(bias, q1, zero)
        c20 = c21 = c22 = c23 = _start(bias, q2, zero)
        c30 = c31 = c32 = c33 = _start(bias, q3, zero)
        c40 = c41 = c42 = c43 = _start(bias, q4, zero)
        c50 = c51 = c52 = c53 = _start(bias, q5, zero)
        for p in range(k):
            row = p * rp + r0
            h0, h1 = simd.vload(b_t, row), simd.vload(b_t, row + w)
            h2, h3 = simd.vload(b_t, row + 2 * w), simd.vload(b_t, row + 3 * w)
            at = p * s_sum
            x = simd.vbroadcast(a, at + q0 * s_out)
            c00, c01, c02, c03 = simd.vfma(x, h0, c00), simd.vfma(x, h1, c01), simd.vfma(x, h2, c02), simd.vfma(x, h3, c03)
            x = simd.vbroadcast(a, at + q1 * s_out)
            c10, c11, c12, c13 = simd.vfma(x, h0, c10), simd.vfma(x, h1, c11), simd.vfma(x, h2, c12), simd.vfma(x, h3, c13)
            x = simd.vbroadcast(a, at + q2 * s_out)
            c20, c21, c22, c23 = simd.vfma(x, h0, c20), simd.vfma(x, h1, c21), simd.vfma(x, h2, c22), simd.vfma(x, h3, c23)
            x = simd.vbroadcast(a, at + q3 * s_out)
            c30, c31, c32, c33 = simd.vfma(x, h0, c30), simd.vfma(x, h1, c31), simd.vfma(x, h2, c32), simd.vfma(x, h3, c33)
            x = simd.vbroadcast(a, at + q4 * s_out)
            c40, c41, c42, c43 = simd.vfma(x, h0, c40), simd.vfma(x, h1, c41), simd.vfma(x, h2, c42), simd.vfma(x, h3, c43)
            x = simd.vbroadcast(a, at + q5 * s_out)
            c50, c51, c52, c53 = simd.vfma(x, h0, c50), simd.vfma(x, h1, c51), simd.vfma(x, h2, c52), simd.vfma(x, h3, c53)
        for qq in range(min(6, n - q0)):
            c0, c1, c2, c3 = ((c00, c01, c02, c03) if qq == 0 else (c10, c11, c12, c13) if qq == 1
                              else (c20, c21, c22, c23) if qq == 2 else (c30, c31, c32, c33) if qq == 3
                              else (c40, c41, c42, c43) if qq == 4 else (c50, c51, c52, c53))
            base = (q0 + qq) * rp + r0
            _store(c_t, base, c0, add)
            _store(c_t, base + w, c1, add)
            _store(c_t, base + 2 * w, c2, add)
            _store(c_t, base + 3 * w, c3, add)


@jit_inline
def _singles(a, strides, b_t, c_t, rp, add, bias, v0):
    """Row vector v0 of every output, by tiles of 12 outputs."""
    s_sum, s_out = strides
    w, k, n, r0, zero = _frame(a, b_t, c_t, rp, v0)
    for q0 in range(0, n, 12):
        q = (q0, min(q0 + 1, n - 1), min(q0 + 2, n - 1), min(q0 + 3, n - 1), min(q0 + 4, n - 1),
             min(q0 + 5, n - 1), min(q0 + 6, n - 1), min(q0 + 7, n - 1), min(q0 + 8, n - 1),
             min(q0 + 9, n - 1), min(q0 + 10, n - 1), min(q0 + 11, n - 1))
        c0, c1, c2, c3 = (_start(bias, q[0], zero), _start(bias, q[1], zero), _start(bias, q[2], zero),
                          _start(bias, q[3], zero))
        c4, c5, c6, c7 = (_start(bias, q[4], zero), _start(bias, q[5], zero), _start(bias, q[6], zero),
                          _start(bias, q[7], zero))
        c8, c9, c10, c11 = (_start(bias, q[8], zero), _start(bias, q[9], zero), _start(bias, q[10], zero),
                            _start(bias, q[11], zero))
        for p in range(k):
            h = simd.vload(b_t, p * rp + r0)
            at = p * s_sum
            c0 = simd.vfma(simd.vbroadcast(a, at + q[0] * s_out), h, c0)
            c1 = simd.vfma(simd.vbroadcast(a, at + q[1] * s_out), h, c1)
            c2 = simd.vfma(simd.vbroadcast(a, at + q[2] * s_out), h, c2)
            c3 = simd.vfma(simd.vbroadcast(a, at + q[3] * s_out), h, c3)
            c4 = simd.vfma(simd.vbroadcast(a, at + q[4] * s_out), h, c4)
            c5 = simd.vfma(simd.vbroadcast(a, at + q[5] * s_out), h, c5)
            c6 = simd.vfma(simd.vbroadcast(a, at + q[6] * s_out), h, c6)
            c7 = simd.vfma(simd.vbroadcast(a, at + q[7] * s_out), h, c7)
            c8 = simd.vfma(simd.vbroadcast(a, at + q[8] * s_out), h, c8)
            c9 = simd.vfma(simd.vbroadcast(a, at + q[9] * s_out), h, c9)
            c10 = simd.vfma(simd.vbroadcast(a, at + q[10] * s_out), h, c10)
            c11 = simd.vfma(simd.vbroadcast(a, at + q[11] * s_out), h, c11)
        for qq in range(min(12, n - q0)):
            c = (c0 if qq == 0 else c1 if qq == 1 else c2 if qq == 2 else c3 if qq == 3 else c4 if qq == 4
                 else c5 if qq == 5 else c6 if qq == 6 else c7 if qq == 7 else c8 if qq == 8 else c9 if qq == 9
                 else c10 if qq == 10 else c11)
            _store(c_t, (q0 + qq) * rp + r0, c, add)


@jit_inline
def _single_output(a, strides, b_t, c_t, rp, add, bias, v0):
    """Row vectors v0 and v0 + 1 of the only output (N = 1: a regression head), the sum over p in
    three interleaved chains per vector. The pairs' tile of 6 outputs, clamped to one, computed it
    6 times over in 2 dependent chains: float32, Zen 4, 64 -> 1 by 32 rows, 244 ns."""
    s_sum = strides[0]
    w, k, _, r0, zero = _frame(a, b_t, c_t, rp, v0)
    c00 = c01 = _start(bias, 0, zero)
    c10 = c11 = c20 = c21 = zero
    whole = k - k % 3
    for p in range(0, whole, 3):
        at = p * rp + r0
        x0, x1, x2 = simd.vbroadcast(a, p * s_sum), simd.vbroadcast(a, (p + 1) * s_sum), simd.vbroadcast(a, (p + 2) * s_sum)
        c00, c01 = simd.vfma(x0, simd.vload(b_t, at), c00), simd.vfma(x0, simd.vload(b_t, at + w), c01)
        c10, c11 = simd.vfma(x1, simd.vload(b_t, at + rp), c10), simd.vfma(x1, simd.vload(b_t, at + rp + w), c11)
        c20 = simd.vfma(x2, simd.vload(b_t, at + 2 * rp), c20)
        c21 = simd.vfma(x2, simd.vload(b_t, at + 2 * rp + w), c21)
    for p in range(whole, k):
        at = p * rp + r0
        x0 = simd.vbroadcast(a, p * s_sum)
        c00, c01 = simd.vfma(x0, simd.vload(b_t, at), c00), simd.vfma(x0, simd.vload(b_t, at + w), c01)
    _store(c_t, r0, simd.vadd(simd.vadd(c00, c10), c20), add)
    _store(c_t, r0 + w, simd.vadd(simd.vadd(c01, c11), c21), add)


@jit_inline
def _outer(a, s_out, b_t, c_t, rp, add, bias):
    """K = 1 (dh through a one-output layer): C^T[q, r] (+)= A(0, q) B^T[0, r] (+ bias[q]), one
    output row at a time. The tiles did one FMA per accumulator between their setup and stores:
    float32, one thread, Emerald Rapids, 32 <- 1 by 192 rows 763 -> 312 ns, 64 <- 1 by 32 rows
    353 -> 159 ns (paired medians)."""
    w = simd.width(a)
    zero = simd.vsplat(a.dtype.type(0.0))
    for q in range(c_t.size // rp):
        x = simd.vbroadcast(a, q * s_out)
        start = _start(bias, q, zero)
        for r in range(0, rp, w):
            _store(c_t, q * rp + r, simd.vfma(x, simd.vload(b_t, r), start), add)


# Row vectors by fours where the target has 32 vector registers (AVX-512): the 24 accumulators of
# ``_quads`` and its 4 row vectors fit; with AVX2's 16 they would spill. Against pairs alone,
# float32, one thread, Emerald Rapids, paired medians in one process (time ratios): 32x32 by 192
# rows forward 0.94 and dh 0.92 (the narrow net), 64x64 by 192 rows 0.86 / 0.76 (dW) / 0.81, and
# 64x128 by 64 rows 0.85 / 0.83 / 0.97 (the small net). Tiles of 12 outputs x 2 vectors for
# the 2-vector products of 32-row batches were measured too and dropped: 64x64 by 32 rows forward
# 1.07 and dh 1.09, 16 <- 64 dh 1.46 (16 outputs in tiles of 12), dW 0.77.
QUADS = simd.LANES == 16


@jit
def tiled_product_into(a, s_sum, s_out, b_t, c_t, rp, add, bias):
    """C^T (+)= A^T-product of the module docstring, for C^T of c_t.size // rp outputs and
    K = b_t.size // rp summed rows; ``add`` adds to what C^T holds, else overwrites it. ``bias``
    is empty, or holds N values: bias[q] is added to every entry of output q (the layer's b).

    The caller guarantees rp % lanes == 0, b_t.size and c_t.size multiples of rp, and that a holds
    a[p s_sum + q s_out] for every p < K, q < N."""
    if b_t.size == rp:
        _outer(a, s_out, b_t, c_t, rp, add, bias)
        return
    vectors = rp // simd.width(a)
    single = c_t.size == rp
    paired = 0  # the first row vector the pairs take
    if QUADS and not single:
        paired = vectors - vectors % 4
        for v0 in range(0, paired, 4):
            _quads(a, (s_sum, s_out), b_t, c_t, rp, add, bias, v0)
    for v0 in range(paired, vectors - 1, 2):
        if single:
            _single_output(a, (s_sum, s_out), b_t, c_t, rp, add, bias, v0)
        else:
            _pairs(a, (s_sum, s_out), b_t, c_t, rp, add, bias, v0)
    if (vectors - paired) % 2:
        _singles(a, (s_sum, s_out), b_t, c_t, rp, add, bias, vectors - 1)
