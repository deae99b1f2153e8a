"""Register-tiled matrix products on transposed blocks: batch rows in the vector lanes.

The fused kernels for small nets (``docs/fused-kernels.md``) keep a block's activations as
(features, rows) arrays, the rows padded to a whole number of vectors (``rp``, a multiple of the
lanes of ``simd``). Every product of a layer then has one form,

    C^T[q, r] (+)= sum over p of A(p, q) B^T[p, r],    A(p, q) = a[p s_sum + q s_out],

with a scalar A broadcast and B^T loaded a vector of rows at a time: the forward z^T = W^T h^T
(A = W, s_sum = n_out, s_out = 1) and the backward dh^T = W dz^T (A = W, s_sum = 1, s_out = n_out),
without a transposed copy of W.

All arrays are flat and C-contiguous: B^T (K x rp), C^T (N x rp); a holds A for every (p, q) the
strides address. A tile is 4 outputs q by TILE_VECS row vectors, its accumulators held in
registers: with AVX-512's 32 vector registers 4 x 4 (16 FMAs per 4 broadcasts and 4 loads); with
16 registers 4 x 3, since 16 accumulators plus the loads spill to the stack (float32, Zen 2, one
thread, 64x128 by 64 rows: 4 x 4 23.8 GFLOP/s, 3 x 4 19.5, 4 x 3 46.4). At the edges the tile's
indices are clamped to valid memory and only its valid part is stored.
"""

from . import simd
from ._config import jit, jit_inline

TILE_OUT = 4                                # outputs q per tile
TILE_VECS = 4 if simd.LANES >= 16 else 3  # row vectors per tile (the registers, see above)


@jit_inline
def _store(c_t, at, v, add):
    if add:
        v = simd.vadd(v, simd.vload(c_t, at))
    simd.vstore(c_t, at, v)


@jit
def tiled_product_into(a, s_sum, s_out, b_t, c_t, rp, add):
    """C^T (+)= A^T-product of the module docstring, for C^T of c_t.size // rp outputs and
    K = b_t.size // rp summed rows; ``add`` adds to what C^T holds, else overwrites it.

    The caller guarantees rp % lanes == 0, b_t.size and c_t.size multiples of rp, and that a holds
    a[p s_sum + q s_out] for every p < K, q < N."""
    w = simd.LANES * 4 // a.itemsize
    k = b_t.size // rp
    n = c_t.size // rp
    vectors = rp // w
    for q0 in range(0, n, TILE_OUT):
        q1 = min(q0 + 1, n - 1)
        q2 = min(q0 + 2, n - 1)
        q3 = min(q0 + 3, n - 1)
        for v0 in range(0, vectors, TILE_VECS):
            r0 = v0 * w
            r1 = min(v0 + 1, vectors - 1) * w
            r2 = min(v0 + 2, vectors - 1) * w
            r3 = min(v0 + 3, vectors - 1) * w
            zero = simd.vsplat(a.dtype.type(0.0))
            c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = zero
            c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = zero
            for p in range(k):
                row = p * rp
                h0 = simd.vload(b_t, row + r0)
                h1 = simd.vload(b_t, row + r1)
                h2 = simd.vload(b_t, row + r2)
                h3 = simd.vload(b_t, row + r3)
                at = p * s_sum
                x0 = simd.vbroadcast(a, at + q0 * s_out)
                x1 = simd.vbroadcast(a, at + q1 * s_out)
                x2 = simd.vbroadcast(a, at + q2 * s_out)
                x3 = simd.vbroadcast(a, at + q3 * s_out)
                c00 = simd.vfma(x0, h0, c00)
                c01 = simd.vfma(x0, h1, c01)
                c02 = simd.vfma(x0, h2, c02)
                c03 = simd.vfma(x0, h3, c03)
                c10 = simd.vfma(x1, h0, c10)
                c11 = simd.vfma(x1, h1, c11)
                c12 = simd.vfma(x1, h2, c12)
                c13 = simd.vfma(x1, h3, c13)
                c20 = simd.vfma(x2, h0, c20)
                c21 = simd.vfma(x2, h1, c21)
                c22 = simd.vfma(x2, h2, c22)
                c23 = simd.vfma(x2, h3, c23)
                c30 = simd.vfma(x3, h0, c30)
                c31 = simd.vfma(x3, h1, c31)
                c32 = simd.vfma(x3, h2, c32)
                c33 = simd.vfma(x3, h3, c33)
            more = min(vectors - v0, TILE_VECS)  # row vectors of this tile that exist
            for qq in range(min(TILE_OUT, n - q0)):
                base = (q0 + qq) * rp + r0
                c0, c1, c2, c3 = ((c00, c01, c02, c03) if qq == 0 else (c10, c11, c12, c13) if qq == 1
                                  else (c20, c21, c22, c23) if qq == 2 else (c30, c31, c32, c33))
                _store(c_t, base, c0, add)
                if more > 1:
                    _store(c_t, base + w, c1, add)
                if more > 2:
                    _store(c_t, base + 2 * w, c2, add)
                if TILE_VECS > 3 and more > 3:  # a constant test: c_3 and h3 are dead without it
                    _store(c_t, base + 3 * w, c3, add)


@jit
def tiled_gram_into(a_t, b_t, rp, c, add):
    """C[i, j] (+)= sum over r of A^T[i, r] B^T[j, r]: the weight gradient dW = h^T dz from the
    transposed blocks h^T (M x rp) and dz^T (N x rp), into C (M x N, flat, row-major); ``add`` adds
    to what C holds. Padded rows must hold zeros in one of the two (the loss gives padded rows a
    zero gradient), so they add nothing.

    Tiles of 4 i by 3 j: 12 vector accumulators of lane-partial sums over the row vectors, each
    reduced to its scalar once at the end (``simd.vsum``)."""
    w = simd.LANES * 4 // c.itemsize
    m = a_t.size // rp
    n = b_t.size // rp
    for i0 in range(0, m, 4):
        i1 = min(i0 + 1, m - 1)
        i2 = min(i0 + 2, m - 1)
        i3 = min(i0 + 3, m - 1)
        for j0 in range(0, n, 3):
            j1 = min(j0 + 1, n - 1)
            j2 = min(j0 + 2, n - 1)
            zero = simd.vsplat(c.dtype.type(0.0))
            c00 = c01 = c02 = c10 = c11 = c12 = c20 = c21 = c22 = c30 = c31 = c32 = zero
            for r in range(0, rp, w):
                x0 = simd.vload(a_t, i0 * rp + r)
                x1 = simd.vload(a_t, i1 * rp + r)
                x2 = simd.vload(a_t, i2 * rp + r)
                x3 = simd.vload(a_t, i3 * rp + r)
                y0 = simd.vload(b_t, j0 * rp + r)
                y1 = simd.vload(b_t, j1 * rp + r)
                y2 = simd.vload(b_t, j2 * rp + r)
                c00 = simd.vfma(x0, y0, c00)
                c01 = simd.vfma(x0, y1, c01)
                c02 = simd.vfma(x0, y2, c02)
                c10 = simd.vfma(x1, y0, c10)
                c11 = simd.vfma(x1, y1, c11)
                c12 = simd.vfma(x1, y2, c12)
                c20 = simd.vfma(x2, y0, c20)
                c21 = simd.vfma(x2, y1, c21)
                c22 = simd.vfma(x2, y2, c22)
                c30 = simd.vfma(x3, y0, c30)
                c31 = simd.vfma(x3, y1, c31)
                c32 = simd.vfma(x3, y2, c32)
            for ii in range(min(4, m - i0)):
                s0, s1, s2 = ((c00, c01, c02) if ii == 0 else (c10, c11, c12) if ii == 1
                              else (c20, c21, c22) if ii == 2 else (c30, c31, c32))
                at = (i0 + ii) * n + j0
                _add_sum(c, at, s0, add)
                if j0 + 1 < n:
                    _add_sum(c, at + 1, s1, add)
                if j0 + 2 < n:
                    _add_sum(c, at + 2, s2, add)


@jit_inline
def _add_sum(c, at, v, add):
    total = simd.vsum(v)
    c[at] = c[at] + total if add else total
