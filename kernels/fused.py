"""The fused train step for small nets: forward, loss, backward and update in one compiled call,
every product register-tiled (``tiles``), no BLAS.

A block of the batch is held transposed, (features, rows), its rows padded to a whole number of
vectors (``rp``), so all three products of a layer are ``tiled_product_into`` (the layout is in
``docs/fused-kernels.md``):

    forward   z^T = W^T h^T + b       (A = W, s_sum = n_out, s_out = 1; b starts each output)
    backward  dh^T = W dz^T           (A = W, s_sum = 1, s_out = n_out)
    weights   dW = h^T dz             (A = h^T, s_sum = 1, s_out = rp; dz in row layout, its width
                                       padded to the lanes)

The activations and their derivatives are the elementwise kernels of ``activations``, which do
not care about the layout; the loss is ``losses.loss_and_grad`` on the block's outputs copied back
to row layout. Padded rows hold x = 0 and get a zero loss gradient, so they add nothing to dW, db
or the loss. The workspace is one flat array allocated by the call, cut into views by offset:
allocating it inside costs less than passing a dozen arrays in.

Same contract as ``network.grad_into`` / ``train_step_into``; the sums run in another order than
BLAS's, so results agree with them to rounding, not bit for bit.
"""

import numpy as np

from . import simd, views
from ._config import EXACT_OPTIONS, jit, jit_inline
from .activations import IDENTITY, bias_activate_inplace, chain_derivative_inplace, needs_z
from .losses import GAUSSIAN_NLL, SOFTMAX_CE_LABELS, batch_count, loss_and_grad, softmax_ce_labels_t
from .network import batches_loop
from .optim import update_small_into
from .tiles import tiled_product_into

# Rows per block: dW and db accumulate over blocks, the activations of a block stay in L1/L2.
# train_step, float32, one thread, Sapphire Rapids, the narrow 32-32-32-1 tanh net on 10k rows with
# Adam, medians of three alternating runs: 96 rows 3.01-4.69 ms, 192 2.95-3.09, 384 2.91-2.99,
# 768 3.06-3.69 (384 within the noise of 192). float64 blocks hold the same bytes, 96 rows: the same
# net in float64, two alternating runs: 64 rows 2.79-2.87 ms, 96 2.82-2.95, 128 2.96-2.97, 192
# 2.93-3.00 (float32's 64 and 96 rows were 1.33-1.41 ms against 192's 1.27-1.30).
BLOCK_ROWS = 192  # float32 rows

# A layer with fewer outputs takes its dW as dot products over the rows (_narrow_weight_grad_into);
# a wider one through the tiled product, dz padded to whole vectors. 64 inputs, float32, Zen 4,
# 32 rows (192 rows alike): 5 outputs 1068 against 1059 ns, 6 1358 against 1039, 10 2306
# against 1101 (the 10-class heads of the small and fit benchmark nets).
NARROW_OUTPUTS = 6


@jit_inline
def _pads_weight_grad(n_out, w):
    """True when a layer of n_out outputs takes dW through the tiled product into a padded copy
    in the workspace (at least NARROW_OUTPUTS outputs, not a whole number of vectors)."""
    return n_out % w != 0 and n_out >= NARROW_OUTPUTS


@jit_inline
def _round_up(n, w):
    return -(-n // w) * w


@jit_inline
def _layout(params, x, w):
    """(block rows rp, offsets) of the workspace: offsets[3 l + 0, 1, 2] for layer l's a^T, z^T
    and d^T (each n_out x rp), then x^T, dz in row layout, the padded dW of the layers at least w
    wide whose width is not a multiple of w, the output rows and their gradient; offsets[-1] =
    the total size."""
    depth = len(params)
    rp = _round_up(min(max(x.shape[0], 1), BLOCK_ROWS * 4 // x.itemsize), w)
    k = params[depth - 1][0].shape[1]
    offsets = np.empty(3 * depth + depth + 5, dtype=np.int64)
    at = 0
    widest = 0
    for l in range(depth):
        n_out = params[l][0].shape[1]
        widest = max(widest, _round_up(n_out, w))
        for part in range(3):
            offsets[3 * l + part] = at
            at += n_out * rp
    base = 3 * depth
    offsets[base] = at  # x^T
    at += x.shape[1] * rp
    offsets[base + 1] = at  # dz, rows x widest padded width
    at += rp * widest
    for l in range(depth):  # padded dW
        n_in, n_out = params[l][0].shape
        offsets[base + 2 + l] = at
        if _pads_weight_grad(n_out, w):
            at += n_in * _round_up(n_out, w)
    offsets[base + 2 + depth] = at  # the output block in row layout
    at += rp * k
    offsets[base + 3 + depth] = at  # its loss gradient
    at += rp * k
    offsets[base + 4 + depth] = at
    return rp, offsets


@jit_inline
def _view(work, at, rows, cols):
    return views.matrix(work, at, rows, cols)


@jit_inline
def _transpose_into(a, lo, rows, out):
    """out[j, r] = a[lo + r, j] for r < rows, j < a's columns (a and out 2-D, C-contiguous):
    whole lanes x lanes blocks in registers (``simd.transpose_block``), the edges one by one.
    out's columns from ``rows`` on are left as they were."""
    w = simd.width(a)
    cols = a.shape[1]
    whole_rows = rows - rows % w
    whole_cols = cols - cols % w
    src, dst = views.whole(a), views.whole(out)
    stride, out_stride = a.shape[1], out.shape[1]
    for r0 in range(0, whole_rows, w):
        for j0 in range(0, whole_cols, w):
            simd.transpose_block(src, ((lo + r0) * stride + j0, stride), dst, (j0 * out_stride + r0, out_stride))
    for r in range(whole_rows, rows):
        for j in range(whole_cols):
            out[j, r] = a[lo + r, j]
    for r in range(rows):
        for j in range(whole_cols, cols):
            out[j, r] = a[lo + r, j]


@jit_inline
def _narrow_weight_grad_into(h_t, d_t, block, gW, add):
    """gW[i, j] (+)= sum over r < rows of h^T[i, r] dz^T[j, r], block = (rp, rows), for a layer
    with fewer than NARROW_OUTPUTS outputs: dot products over the rows, 4 inputs at a time, in
    vector-partial sums. In row layout, dz would be padded to a whole vector (16x the work for one
    output, float32 AVX-512). The tail of the rows is loaded masked: padded rows are never read."""
    rp, rows = block
    n_in, n_out = gW.shape
    w = simd.width(h_t)
    whole = rows - rows % w
    tail = rows - whole
    zero = simd.vsplat(h_t.dtype.type(0.0))
    for j in range(n_out):
        dj = j * rp
        for i0 in range(0, n_in, 4):
            i1, i2, i3 = min(i0 + 1, n_in - 1), min(i0 + 2, n_in - 1), min(i0 + 3, n_in - 1)
            a0 = a1 = a2 = a3 = zero
            for r in range(0, whole, w):
                d = simd.vload(d_t, dj + r)
                a0 = simd.vfma(simd.vload(h_t, i0 * rp + r), d, a0)
                a1 = simd.vfma(simd.vload(h_t, i1 * rp + r), d, a1)
                a2 = simd.vfma(simd.vload(h_t, i2 * rp + r), d, a2)
                a3 = simd.vfma(simd.vload(h_t, i3 * rp + r), d, a3)
            if tail:
                d = simd.vload_first(d_t, dj + whole, tail)
                a0 = simd.vfma(simd.vload_first(h_t, i0 * rp + whole, tail), d, a0)
                a1 = simd.vfma(simd.vload_first(h_t, i1 * rp + whole, tail), d, a1)
                a2 = simd.vfma(simd.vload_first(h_t, i2 * rp + whole, tail), d, a2)
                a3 = simd.vfma(simd.vload_first(h_t, i3 * rp + whole, tail), d, a3)
            for ii in range(min(4, n_in - i0)):
                total = simd.vsum(a0 if ii == 0 else a1 if ii == 1 else a2 if ii == 2 else a3)
                gW[i0 + ii, j] = gW[i0 + ii, j] + total if add else total


@jit_inline
def _column_sums_into(d_t, rp, rows, out, add):
    """out[j] (+)= sum over r < rows of d_t[j rp + r] (a narrow layer's dz^T), row after row in
    order: the reference's (and BLAS path's) order, so db has their bits. A different order gives
    different rounding where the rows cancel, and Adam, whose step does not shrink with the
    gradient, turns a rounding residual against an exact 0 into a full step. The rows are the
    outer loop on purpose: a sum over r in a scalar would be reassociated (the kernels compile
    with fastmath "reassoc") into lane-partial sums."""
    if not add:
        out[:] = 0
    for r in range(rows):
        for j in range(out.size):
            out[j] += d_t[j * rp + r]


@jit_inline
def _row_sums_into(d, rows, width, out, add):
    """``_column_sums_into`` for d in row layout, rows of ``width`` (a multiple of the lanes, at
    least out.size): the same sums in the same order, a vector of columns at a time (the scalar
    loop took 3.4 of the 19 us of 16-64-64-1 relu at 32 rows; the whole gradient now 16 us)."""
    w = simd.width(d)
    n = out.size
    for j0 in range(0, n, w):
        k = min(w, n - j0)
        acc = simd.vload_first(out, j0, k) if add else simd.vsplat(d.dtype.type(0.0))
        for r in range(rows):
            acc = simd.vadd(acc, simd.vload(d, r * width + j0))
        simd.vstore_first(out, j0, acc, k)


def _fused_grad(params, codes, x, loss, grads):
    """Mean loss of the batch x; grads <- dL/dparams. loss = (loss code, target, labels, weights)."""
    loss_code, target, labels, weights = loss
    n = x.shape[0]
    if n == 0:
        for l in range(len(grads)):
            grads[l][0][:] = 0
            grads[l][1][:] = 0
        return 0.0
    dtype = x.dtype
    w = simd.width(x)
    depth = len(params)
    last = depth - 1
    k = params[last][0].shape[1]
    rp_max, offsets = _layout(params, x, w)
    work = views.aligned_empty(offsets[-1], x)
    widest = 1
    for l in range(depth):
        widest = max(widest, params[l][0].shape[1])
    # The bias is added in the product, so activate adds zeros; a layer's block goes through the
    # elementwise kernels as one row of n_out * rp, one long loop instead of n_out short ones.
    zeros = np.zeros(widest * rp_max, dtype=dtype)
    no_bias = zeros[:0]
    base = 3 * depth
    n_in0 = x.shape[1]
    # Typed int64 and bool, not as the literals 1 and False: Numba compiles a kernel once per
    # literal argument, and tiled_product_into took 6-9 s to compile, three times over.
    unit, overwrite = np.int64(1), np.bool_(False)
    total = 0.0
    count = batch_count(weights, n)
    for lo in range(0, n, rp_max):
        rows = min(rp_max, n - lo)
        rp = _round_up(rows, w)
        add = lo > 0
        # x^T, padded rows zero
        h_t = _view(work, offsets[base], n_in0, rp)
        _transpose_into(x, lo, rows, h_t)
        # forward
        for l in range(depth):
            W, b = params[l]
            n_out = W.shape[1]
            a_t = _view(work, offsets[3 * l], n_out, rp)
            tiled_product_into(views.whole(W), n_out, unit, views.whole(h_t), views.whole(a_t),
                               rp, overwrite, b)
            size = n_out * rp
            if needs_z(codes[l]):
                views.copy_into(_view(work, offsets[3 * l + 1], 1, size), _view(work, offsets[3 * l], 1, size))
            if codes[l] != IDENTITY:
                bias_activate_inplace(codes[l], _view(work, offsets[3 * l], 1, size), zeros[:size])
            h_t = a_t
        # loss: softmax with labels on the transposed block, the others on its outputs in row layout
        d_t = _view(work, offsets[3 * last + 2], k, rp)
        if loss_code == SOFTMAX_CE_LABELS:
            total += softmax_ce_labels_t(h_t, labels[lo:lo + rows], weights[lo:lo + rows], d_t, count)
        else:
            out_rows = _view(work, offsets[base + 2 + depth], rows, k)
            d_rows = _view(work, offsets[base + 3 + depth], rows, k)
            for r in range(rows):
                for j in range(k):
                    out_rows[r, j] = h_t[j, r]
            total += loss_and_grad(loss_code, out_rows, target[lo:lo + rows], labels[lo:lo + rows],
                                   weights[lo:lo + rows], d_rows, count)
            for j in range(k):
                for r in range(rows):
                    d_t[j, r] = d_rows[r, j]
                for r in range(rows, rp):
                    d_t[j, r] = 0
        # backward
        for l in range(last, -1, -1):
            W = params[l][0]
            gW, gb = grads[l]
            n_in, n_out = W.shape
            size = n_out * rp
            a_row = _view(work, offsets[3 * l], 1, size)
            z_row = _view(work, offsets[3 * l + 1], 1, size) if needs_z(codes[l]) else a_row
            chain_derivative_inplace(codes[l], z_row, a_row, _view(work, offsets[3 * l + 2], 1, size))
            d_t = _view(work, offsets[3 * l + 2], n_out, rp)
            h_t = _view(work, offsets[base], n_in0, rp) if l == 0 else _view(work, offsets[3 * (l - 1)], n_in, rp)
            if n_out < NARROW_OUTPUTS:
                _narrow_weight_grad_into(views.whole(h_t), views.whole(d_t), (rp, rows), gW, add)
                _column_sums_into(views.whole(d_t), rp, rows, gb, add)
            else:
                padded = _round_up(n_out, w)
                dz = _view(work, offsets[base + 1], rp, padded)
                _transpose_into(d_t, 0, n_out, dz)
                dW = views.whole(gW) if padded == n_out else views.flat(work, offsets[base + 2 + l], n_in * padded)
                tiled_product_into(views.whole(h_t), unit, rp, views.flat(dz, 0, rows * padded), dW, padded, add,
                                   no_bias)
                _row_sums_into(views.whole(dz), rows, padded, gb, add)
            if l > 0:
                dh_t = _view(work, offsets[3 * (l - 1) + 2], n_in, rp)
                tiled_product_into(views.whole(W), unit, n_out, views.whole(d_t), views.whole(dh_t),
                                   rp, overwrite, no_bias)
    for l in range(depth):  # the padded weight gradients into grads
        gW = grads[l][0]
        n_in, n_out = gW.shape
        if _pads_weight_grad(n_out, w):
            padded = _round_up(n_out, w)
            views.copy_into(gW, _view(work, offsets[base + 2 + l], n_in, padded)[:, :n_out])
    views.hold(work)
    return total


# The kernels below inline the body (in Numba's IR) rather than call it compiled on its own:
# Numba optimises and generates the machine code of a called kernel again inside every caller, so
# each level of calls repeats the LLVM work of everything beneath it. First use (tiny net, SGD,
# float32, a fresh cache, import to the first forward, alternating runs): called 50.5-53.6 s,
# inlined 42.0-48.8 s.
_fused_grad_inline = jit_inline(_fused_grad)


@jit
def fused_grad_buffers_into(params, codes, x, loss, buffers, grads):
    """The fused gradient (``_fused_grad``) with ``network.grad_into``'s signature (the layer
    buffers go unused), for the shared mini-batch loop."""
    return _fused_grad_inline(params, codes, x, loss, grads)


@jit
def fused_train_batches(sets, codes, data, plan, works, grads, opt_code):
    """``network.train_batches`` through the fused gradient (works' layer buffers go unused)."""
    return batches_loop(fused_grad_buffers_into, update_small_into, sets, codes, data, plan, (works, grads), opt_code)


@jit_inline
def _batch_fits(layout, depth, x, loss):
    """True when x is (n, layout[0]), the targets (n, layout[depth]) or n labels in
    [0, layout[depth]), and the weights none or n."""
    code, target, labels, weights = loss
    n, k = x.shape[0], layout[depth]
    if x.shape[1] != layout[0] or (weights.shape[0] != 0 and weights.shape[0] != n):
        return False
    if code == SOFTMAX_CE_LABELS:
        if labels.shape[0] != n:
            return False
        bad = False
        for i in range(n):
            bad |= (labels[i] < 0) | (labels[i] >= k)
        return not bad
    if code == GAUSSIAN_NLL:  # a mean and a log-variance per target
        return target.shape[0] == n and 2 * target.shape[1] == k
    return target.shape[0] == n and target.shape[1] == k


@jit_inline
def _packing_fits(packing, layout, size):
    """(True, elements a set's arrays span from offset 0) when every view ``views.param_sets``
    makes of a buffer of ``size`` elements lies inside it and the shapes are the layout's; else
    (False, 0)."""
    shapes, offsets, firsts = packing
    depth = len(shapes)
    if layout.shape[0] != 2 * depth + 1:
        return False, 0
    bad = False
    span = 0
    for l in range(depth):
        n_in, n_out = shapes[l]
        bad |= (n_in != layout[l]) | (n_out != layout[l + 1]) | (n_in < 0) | (n_out < 0)
        for first in firsts:
            w_at, b_at = 2 * l + first, 2 * l + 1 + first
            bad |= (first < 0) | (b_at >= offsets.shape[0])
            if not bad:
                bad |= (offsets[w_at] < 0) | (offsets[w_at] + n_in * n_out > size)
                bad |= (offsets[b_at] < 0) | (offsets[b_at] + n_out > size)
                if first == firsts[0]:
                    span = max(span, offsets[w_at] + n_in * n_out, offsets[b_at] + n_out)
    return not bad, span


@jit_inline
def _params_fit(params, layout):
    """True when params[l] is (W, b) with W (layout[l], layout[l + 1]) and b (layout[l + 1],)."""
    depth = len(params)
    if layout.shape[0] != 2 * depth + 1:
        return False
    bad = False
    for l in range(depth):
        W, b = params[l]
        bad |= (W.shape[0] != layout[l]) | (W.shape[1] != layout[l + 1]) | (b.shape[0] != layout[l + 1])
    return not bad


@jit
def fused_grad_checked_into(params, layout, x, loss, packing, grads_flat):
    """The fused gradient (``_fused_grad``) with every shape checked first, written into the one set
    of ``views.param_sets(grads_flat, *packing)``: returns (True, the mean loss), or (False, 0.0)
    having computed nothing. layout and loss as ``fused_train_step_packed_into`` takes them.

    ``grad`` calls it only with compilation switched off (``call_compiling``), so the call checks
    the argument types: params that are a tuple of (W, b) tuples of C arrays of x's dtype reach
    it unlooked at, and it checks their shapes against the net's layout."""
    depth = len(params)
    fits, _ = _packing_fits(packing, layout, grads_flat.size)
    if (not fits or len(packing[2]) != 1 or len(packing[0]) != depth or not _params_fit(params, layout)
            or not _batch_fits(layout, depth, x, loss)):
        return False, 0.0
    grads = views.param_sets(grads_flat, *packing)[0]
    return True, _fused_grad_inline(params, layout[depth + 1:], x, loss, grads)


@jit
def fused_train_step_packed_into(packing, packed, layout, x, loss, update, packed_out):
    """Forward + loss + backward + optimizer update (``_fused_grad``, ``optim.update_small_into``) on
    params and moments packed in one buffer: ``views.param_sets(packed, *packing)`` are (params,
    moment 1, moment 2, ...), and the updated ones go to the same places in ``packed_out``. Every
    shape, offset and label is checked first: returns (True, the loss before the update), or
    (False, 0.0) having computed nothing.

    packing = (shapes, offsets, firsts) (``fastnn._buffers.PackedSets``); layout = [n_in, ...,
    n_out, code_1, ..., code_L] (int64); loss = (loss code, target, labels, weights); update = (optimizer
    code, hp). The argument types are checked by the call: ``fastnn`` compiles it through
    ``call_compiling``, so types it was not compiled for raise TypeError. Two arrays to unbox
    instead of one per W, b and moment: the call of the tiny net's SGD step took 3.1 us with its
    22 arrays in tuples, 1.3 us packed."""
    opt_code, hp = update
    fits, span = _packing_fits(packing, layout, packed.size)
    if not fits or packed_out.size != packed.size or not _batch_fits(layout, len(packing[0]), x, loss):
        return False, 0.0
    sets = views.param_sets(packed, *packing)
    sets_out = views.param_sets(packed_out, *packing)
    shapes, offsets, firsts = packing
    grads_work = views.aligned_empty(span, packed)
    grads = views.param_sets(grads_work, shapes, offsets, firsts[:1])[0]
    params = sets[0]
    value = _fused_grad_inline(params, layout[len(params) + 1:], x, loss, grads)
    update_small_into(opt_code, hp, params, grads, sets[1:], sets_out[0], sets_out[1:])
    views.hold(grads_work)
    return True, value


@jit_inline
def _weighted_sum_into(g, g_2, w_1, w_2):
    """g <- w_1 g + w_2 g_2 (1-D arrays of one size)."""
    for i in range(g.size):
        g[i] = w_1 * g[i] + w_2 * g_2[i]


@jit(options=EXACT_OPTIONS)
def weighted_sum_into(grads, grads_2, weights):
    """grads <- weights[0] grads + weights[1] grads_2, array by array: a batch's mean gradient from
    its halves' (``fastnn/_threads.py``). Plain IEEE arithmetic, with no multiply-add contracted,
    so that ``grad`` and ``train_step`` get the same bits from it."""
    w_1, w_2 = weights
    for l in range(len(grads)):
        _weighted_sum_into(views.whole(grads[l][0]), views.whole(grads_2[l][0]), w_1, w_2)
        _weighted_sum_into(grads[l][1], grads_2[l][1], w_1, w_2)


@jit
def halves_update_packed_into(packing, packed, layout, grads, grads_2, weights, update, packed_out):
    """The update of ``fused_train_step_packed_into`` from a batch's gradient computed in two halves
    (``fused_grad_checked_into`` on each): ``weighted_sum_into(grads, grads_2, weights)``, then
    ``optim.update_small_into`` from ``packed``'s params and moments to ``packed_out``'s. Shapes and
    offsets are checked first: returns False having computed nothing if any is wrong."""
    opt_code, hp = update
    fits, _ = _packing_fits(packing, layout, packed.size)
    shapes = packing[0]
    if not fits or packed_out.size != packed.size or len(grads) != len(shapes):
        return False
    for l in range(len(shapes)):
        n_in, n_out = shapes[l]
        for g in (grads[l], grads_2[l]):
            if g[0].shape[0] != n_in or g[0].shape[1] != n_out or g[1].shape[0] != n_out:
                return False
    weighted_sum_into(grads, grads_2, weights)
    sets = views.param_sets(packed, *packing)
    sets_out = views.param_sets(packed_out, *packing)
    update_small_into(opt_code, hp, sets[0], grads, sets[1:], sets_out[0], sets_out[1:])
    return True
