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
strides address. A tile is 4 outputs q by TILE_VECS row vectors, its accumulators held in
registers: with AVX-512's 32 vector registers 4 x 4 (16 FMAs per 4 broadcasts and 4 loads); with
16 registers 4 x 3, since 16 accumulators plus the loads spill to the stack (float32, Zen 2, one
thread, 64x128 by 64 rows: 4 x 4 23.8 GFLOP/s, 3 x 4 19.5, 4 x 3 46.4). At the edges the tile's
indices are clamped to valid memory and only its valid part is stored.
"""

from . import simd
from ._config import jit, jit_inline

TILE_OUT = 4                                # outputs q per tile (the code below holds 4: x0..x3)
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
    w = simd.width(a)
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
