"""Whole-network kernels: one compiled call runs every layer of an MLP.

``params`` is a tuple of (W, b) pairs, W (n_in, n_out), b (n_out,), all C-contiguous and of one
dtype, so Numba types it as a homogeneous tuple and loops over it (one compile per depth).
``codes`` is an int64 array with one activation code per layer (see ``activations``).

Buffers (all C-contiguous, allocated by the caller, one per layer l, shape (rows, n_out_l)):
``zs`` pre-activations z_l = a_{l-1} W_l + b_l, ``acts`` activations a_l = f_l(z_l),
``deltas`` gradients flowing back. The training kernels take a batch of any size through them in
blocks of the buffers' row count, which the caller chooses. Matrix products go to BLAS through
``blas.matmul*_into``.

Besides what the caller passes, a kernel allocates only private scratch that never leaves the
call (the transposed weights, the row kernels' two scratch rows).
"""

import numpy as np

from numba.extending import overload

from . import simd, stream, views
from ._config import OPTIONS, ROW_OPTIONS, jit, jit_inline
from .blas import matmul_into, matmul_nt_into, matmul_tn_add_into, matmul_tn_into
from .activations import IDENTITY, bias_activate_inplace, chain_derivative_inplace, needs_z
from .losses import batch_count, loss_and_grad
from .optim import update_into


@jit
def forward_into(params, codes, x, acts):
    """acts[l] <- f_l(acts[l-1] W_l + b_l), acts[-1] read as x; the activation is applied in place."""
    h = x
    for l in range(len(params)):
        W, b = params[l]
        a = acts[l]
        matmul_into(h, W, a)
        bias_activate_inplace(codes[l], a, b)
        h = a


@jit
def forward_cache_into(params, codes, x, zs, acts):
    """Forward pass that keeps what backward needs: acts[l][:n] = a_l for the n rows of x (the
    buffers may have more), and zs[l][:n] = z_l for the activations whose derivative needs z
    (``needs_z``; backward reads ``_kept_z``).

    The product goes straight into acts and is activated in place; only layers that need z copy
    it out first (z = h W + b, the same sum, so the same bits). One activation kernel then serves
    training and both forwards, and each layer writes one array, not two."""
    n = x.shape[0]
    h = x
    for l in range(len(params)):
        W, b = params[l]
        a = acts[l][:n]
        matmul_into(h, W, a)
        if needs_z(codes[l]):
            _biased_copy(a, b, zs[l][:n])
        bias_activate_inplace(codes[l], a, b)
        h = a


@jit_inline
def _biased_copy(p, b, z):
    """z[i, j] = p[i, j] + b[j]."""
    n, m = p.shape
    for i in range(n):
        for j in range(m):
            z[i, j] = p[i, j] + b[j]


@jit_inline
def _kept_z(codes, zs, acts, l, n):
    """What backward passes to ``derivative`` as z for layer l: z_l when it needs it, else a_l."""
    return zs[l][:n] if needs_z(codes[l]) else acts[l][:n]


@jit
def backward_into(params, codes, x, buffers, grads, dx, add, wts):
    """Reverse pass over the n rows of x. buffers = (zs, acts, deltas); on entry deltas[-1][:n]
    holds dL/da_L; on exit grads holds dL/dW, dL/db (added to what it held when ``add``: the sum
    over row blocks of a batch).

    Per layer, from the last: dz = dL/da * f'(z) (in place in deltas[l]);
    dL/dW = a_{l-1}^T dz;  dL/db = sum over the rows of dz;  dL/da_{l-1} = dz W^T.
    dL/dx is written into ``dx`` when it has rows (it costs one more product); callers that do
    not want it pass zero rows. ``wts``: the transposed weights from ``transposed_weights``.
    """
    zs, acts, deltas = buffers
    n = x.shape[0]
    need_dx = dx.shape[0] > 0
    at = wts.size  # wts holds the layers in order; this pass takes them from the last
    for l in range(len(params) - 1, -1, -1):
        W = params[l][0]
        gW, gb = grads[l]
        d = deltas[l][:n]
        chain_derivative_inplace(codes[l], _kept_z(codes, zs, acts, l, n), acts[l][:n], d)
        h = x if l == 0 else acts[l - 1][:n]
        if add:
            matmul_tn_add_into(h, d, gW)
        else:
            matmul_tn_into(h, d, gW)
        _column_sums_into(d, gb, add)
        if l == 0 and not need_dx:
            continue
        out = deltas[l - 1][:n] if l > 0 else dx
        if _keeps_transpose(W):
            m, k = W.shape
            at -= W.size
            matmul_into(d, wts[at:at + W.size].reshape(k, m), out)
        else:
            matmul_nt_into(d, W, out)


# dL/da = dz W^T. OpenBLAS runs this product ("NT") at under half the speed of the same product with
# W^T stored, for small W: one thread, float32, (32, 64) @ (64, 64)^T 3.9 us against 1.6 us plus
# a 0.75 us copy of W. Up to this many elements W is transposed first; at 256 x 128 the copy (its
# reads strided) costs more than the NT product loses.
TRANSPOSE_MAX_SIZE = 8192


@jit_inline
def _keeps_transpose(W):
    return W.size <= TRANSPOSE_MAX_SIZE


@jit
def transposed_weights(params, need_dx):
    """W^T, one after another in layer order in one array, for every layer whose dz W^T the reverse
    pass computes (all but the first, unless ``need_dx``) and whose W has up to TRANSPOSE_MAX_SIZE
    elements. Made once per call, whatever the number of row blocks."""
    size = 0
    for l in range(len(params)):
        W = params[l][0]
        if (l > 0 or need_dx) and _keeps_transpose(W):
            size += W.size
    wts = np.empty(size, dtype=params[0][0].dtype)
    at = 0
    for l in range(len(params)):
        W = params[l][0]
        if (l > 0 or need_dx) and _keeps_transpose(W):
            m, k = W.shape
            wt = wts[at:at + W.size].reshape(k, m)
            for j in range(k):  # writes contiguous, reads strided: faster than the other way round
                for i in range(m):
                    wt[j, i] = W[i, j]
            at += W.size
    return wts


@jit
def _column_sums_into(d, out, add):
    """out[j] (+)= sum_i d[i, j], row by row so the inner loop runs over contiguous memory."""
    if not add:
        out[:] = 0
    for i in range(d.shape[0]):
        for j in range(d.shape[1]):
            out[j] += d[i, j]


@jit_inline
def _blocks(params, codes, x, loss, buffers, grads, vjp_io, vjp):
    """The batch x through forward and backward in blocks of the workspace's rows, each block
    adding its share to the mean loss and the gradient. Returns the mean loss (0 for vjp).

    loss = (loss code, target, labels, weights) gives dL/d(output); when ``vjp`` (a constant at each call
    site) it comes from dy instead, vjp_io = (dy, dx), and dL/dx goes to dx.
    buffers = (zs, acts, deltas), each layer's of the workspace's rows.

    Inlined into both callers: as a compiled function of its own, one more level of calls, the
    first use took ~2.5 s longer (each level re-optimises the code it links in).
    """
    loss_code, target, labels, weights = loss
    zs, acts, deltas = buffers
    dy, dx = vjp_io
    n = x.shape[0]
    block = zs[0].shape[0]
    if n > 0 and block == 0:  # a guard: a caller's bug would otherwise loop forever
        raise ValueError("grad: the workspace has no rows")
    if n == 0:  # an empty batch's gradient
        for l in range(len(grads)):
            grads[l][0][:] = 0
            grads[l][1][:] = 0
        return 0.0
    wts = transposed_weights(params, vjp)
    last = len(params) - 1
    total = 0.0
    count = batch_count(weights, n)
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        xs = x[lo:hi]
        forward_cache_into(params, codes, xs, zs, acts)
        if vjp:
            views.copy_into(deltas[last], dy[lo:hi])
        else:
            # A placeholder target, labels or weights (no rows) stays empty when sliced.
            total += loss_and_grad(loss_code, acts[last][:hi - lo], target[lo:hi], labels[lo:hi], weights[lo:hi],
                                   deltas[last][:hi - lo], count)
        backward_into(params, codes, xs, buffers, grads, dx[lo:hi], lo > 0, wts)
    return total


@jit
def grad_into(params, codes, x, loss, buffers, grads):
    """Forward, loss and backward in one call, in row blocks (``_blocks``); returns the mean loss,
    fills ``grads``. loss = (loss code, target, labels, weights); buffers = (zs, acts, deltas)."""
    no_rows = x[:0]  # grad reads no dy and writes no dx
    return _blocks(params, codes, x, loss, buffers, grads, (no_rows, no_rows), False)


@jit
def vjp_into(params, codes, x, dy, buffers, grads, dx):
    """grads <- dL/dparams and dx <- dL/dx given dy = dL/d(output), in row blocks (``_blocks``)."""
    no_labels = np.empty(0, dtype=np.int64)  # the loss inputs go unread
    _blocks(params, codes, x, (0, dy[:0], no_labels, np.empty(0, dtype=dy.dtype)), buffers, grads, (dy, dx), True)


@jit
def train_step_into(params, codes, x, loss, buffers, grads, update, out):
    """Fused forward + loss + backward + optimizer update; returns the loss before the update.

    loss = (loss code, target, labels, weights); buffers = (zs, acts, deltas); update = (optimizer code,
    hp, slots); out = (params_out, slots_out) receives the updated params and optimizer slots.
    """
    value = grad_into(params, codes, x, loss, buffers, grads)
    opt_code, hp, slots = update
    update_into(opt_code, hp, params, grads, slots, out[0], out[1])
    return value


@jit
def train_batches(sets, codes, data, plan, works, grads, opt_code):
    """Mini-batch training: batches first, first + 1, ... of ``order``, one per row of ``hps``.

    data = (x, (loss code, target, labels, weights)) for the whole training set (the unused one of
    target and labels an empty placeholder, as are the weights when the rows are not weighted);
    plan = (order, first, hps): batch s takes the samples order[(first + s) * size : (first + s + 1)
    * size], size = the row count of xb, with the hyperparameters hps[s]. Each batch is gathered into
    a workspace; the final, shorter batch uses the second one. works = (full, last), each (xb, tb,
    lb, wb, zs, acts, deltas): xb, tb, lb, wb hold a whole batch, the layer buffers a block of it
    (``grad_into``).

    sets = (current, spare), (params, slots) pairs owned by the caller. Each update reads one and
    writes the other, so its outputs never alias its inputs: only then does LLVM vectorise the
    update loops (Adam on 5.3k params: 3 us, against 11 us updating in place). After an odd number of
    steps the newest values are in ``spare``. Returns (sum over batches of mean loss * batch count,
    the counts' sum, steps taken), a batch's count its rows or its weights' sum
    (``losses.batch_count``); stops after the first batch whose loss is not finite.
    """
    return batches_loop(grad_into, update_into, sets, codes, data, plan, (works, grads), opt_code)


@jit_inline
def batches_loop(grad, update, sets, codes, data, plan, buffers, opt_code):
    """The body of ``train_batches``, buffers = (works, grads), with the gradient kernel ``grad`` (a
    compiled function with ``grad_into``'s signature) and the update ``update``
    (``optim.update_into``'s), each passed on its own: in a tuple, Numba would take them as
    first-class function values. ``kernels.fused`` runs the same loop through its own kernels."""
    # Borrowed (``views.borrow``): the caller holds every array through the call. Passed on to
    # the gradient and the update as they are, each of their arrays would be taken and dropped
    # (two atomic operations) at every call: NRT_incref and NRT_decref made 4.6% of fit's
    # epoch at batch 32 (32-64-64-10 tanh, Adam, float32, Zen 4, perf).
    sets, codes, data, plan, buffers = views.borrow((sets, codes, data, plan, buffers))
    works, grads = buffers
    current, spare = sets
    x, (loss_code, target, labels, weights) = data
    order, first, hps = plan
    size = works[0][0].shape[0]
    n = order.shape[0]
    total = 0.0
    seen = 0.0
    steps = 0
    for s in range(hps.shape[0]):
        lo = (first + s) * size
        rows = min(size, n - lo)
        xb, tb, lb, wb, zs, acts, deltas = works[0] if rows == size else works[1]
        # Element by element, not xb[i, :] = x[j, :]: each row slice is a view (two atomic
        # reference-count updates) and a generic copy; the gather took 13% of fit's epoch at
        # batch 32 (32-64-64-10 tanh, float32, one thread, Zen 4, perf).
        n_x, n_t = x.shape[1], tb.shape[1]
        for i in range(rows):
            j = order[lo + i]
            for c in range(n_x):
                xb[i, c] = x[j, c]
            if tb.shape[0]:
                for c in range(n_t):
                    tb[i, c] = target[j, c]
            if lb.shape[0]:
                lb[i] = labels[j]
            if wb.shape[0]:
                wb[i] = weights[j]
        # The next batch's rows, scattered over x, asked for now so that they are in the caches
        # when it gathers them: waiting on them was 5.8% of fit's epoch at batch 32 (10k rows of
        # 32 float32 features, 1.3 MB: past Zen 4's L2).
        next_lo, next_hi = min(n, lo + size), min(n, lo + 2 * size)
        stream.prefetch_rows(x, order, next_lo, next_hi)
        if tb.shape[0]:
            stream.prefetch_rows(target, order, next_lo, next_hi)
        # The two sets swap roles every batch. Written out in two branches: choosing them as
        # (src, dst) = (current, spare) or (spare, current) made new tuples of every array
        # they hold, each taking and dropping a reference (atomic operations) per batch.
        if s % 2 == 0:
            value = grad(current[0], codes, xb, (loss_code, tb, lb, wb), (zs, acts, deltas), grads)
            update(opt_code, hps[s], current[0], grads, current[1], spare[0], spare[1])
        else:
            value = grad(spare[0], codes, xb, (loss_code, tb, lb, wb), (zs, acts, deltas), grads)
            update(opt_code, hps[s], spare[0], grads, spare[1], current[0], current[1])
        count = batch_count(wb, rows)
        total += value * count
        seen += count
        steps += 1
        if not np.isfinite(value):
            break
    return total, seen, steps


@jit_inline
def _vector_matrix(w, w0, shape, h, a, bias, b0, add_bias):
    """a[j] <- sum over i of h[i] w[w0 + i n_out + j] (+ bias[b0 + j] when add_bias):
    one sample h (n_in,) times W (shape = (n_in, n_out), row-major in the flat w), for j < n_out.

    Features in the vector lanes: a vector of outputs at a time, W's rows loaded (masked past
    n_out) and h[i] broadcast, the sum over i in 4 chains; a single output (a regression head) as
    a dot product of h with W's one column. One 64x64 layer in a compiled loop, float32, one
    thread, Emerald Rapids: Numba's loop over W's rows (a load and a store of a per row of W)
    560-612 ns, vectors 300-307 ns, ~190 ns of either being the call's fixed cost. One loop form
    for every width, because every row kernel inlines this: with a second form for groups of 4
    vectors, the first forward compiled in 5-7 s instead of ~2.
    """
    n_in, n_out = shape
    lanes = simd.width(w)
    zero = simd.vsplat(w.dtype.type(0.0))
    if n_out == 1:
        c0 = c1 = zero
        for i in range(0, n_in - 2 * lanes + 1, 2 * lanes):
            c0 = simd.vfma(simd.vload(h, i), simd.vload(w, w0 + i), c0)
            c1 = simd.vfma(simd.vload(h, i + lanes), simd.vload(w, w0 + i + lanes), c1)
        for i in range(n_in - n_in % (2 * lanes), n_in, lanes):
            n = min(lanes, n_in - i)
            c0 = simd.vfma(simd.vload_first(h, i, n), simd.vload_first(w, w0 + i, n), c0)
        a[0] = simd.vsum(simd.vadd(c0, c1)) + (bias[b0] if add_bias else w.dtype.type(0.0))
        return
    quads = n_in - n_in % 4
    for j in range(0, n_out, lanes):
        n = min(lanes, n_out - j)
        c0 = simd.vload_first(bias, b0 + j, n) if add_bias else zero
        c1 = c2 = c3 = zero
        for i in range(0, quads, 4):
            at = w0 + i * n_out + j
            c0 = simd.vfma(simd.vbroadcast(h, i), simd.vload_first(w, at, n), c0)
            c1 = simd.vfma(simd.vbroadcast(h, i + 1), simd.vload_first(w, at + n_out, n), c1)
            c2 = simd.vfma(simd.vbroadcast(h, i + 2), simd.vload_first(w, at + 2 * n_out, n), c2)
            c3 = simd.vfma(simd.vbroadcast(h, i + 3), simd.vload_first(w, at + 3 * n_out, n), c3)
        for i in range(quads, n_in):
            c0 = simd.vfma(simd.vbroadcast(h, i), simd.vload_first(w, w0 + i * n_out + j, n), c0)
        simd.vstore_first(a, j, simd.vadd(simd.vadd(c0, c1), simd.vadd(c2, c3)), n)


@jit_inline
def _layer_row(w, w0, shape, bias, b0, code, h, a):
    """a <- f(h W + b) for one sample: h (n_in,), W of shape = (n_in, n_out) row-major in the
    flat w from w0, b = bias[b0 : b0 + n_out], a (n_out,). ``_vector_matrix``, then the
    activation, the ``bias_activate_inplace`` training compiles too (the bias goes in the sum for
    the identity, the usual output layer, which then needs no activation call). a must not
    overlap h or W.
    """
    identity = code == IDENTITY
    _vector_matrix(w, w0, shape, h, a, bias, b0, identity)
    if not identity:
        n_out = shape[1]
        bias_activate_inplace(code, views.matrix(a, 0, 1, n_out), views.flat(bias, b0, n_out))


@jit_inline
def _packed_row(flat, layout, h, scratch, out):
    """out <- the network's output for one sample h (see forward_packed_into)."""
    last = layout.shape[0] - 1
    for l in range(last + 1):
        w0, b0, n_in, n_out, code = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3], layout[l, 4]
        a = out if l == last else views.flat(scratch, (l % 2) * scratch.shape[1], n_out)
        _layer_row(flat, w0, (n_in, n_out), flat, b0, code, h, a)
        h = a


@jit_inline
def _row_scratch(dtype, width):
    """Two rows of ``width`` for the hidden activations. Allocated per call so that concurrent
    calls (the kernels release the GIL) never share them."""
    return np.empty((2, width), dtype=dtype)


@jit_inline
def _widest_layer(layout):
    """The most outputs of any layer of a packed ``layout`` (``forward_packed_into``'s), by a loop:
    ``layout[:, 3].max()`` was a library call on a strided view: the tiny net's one-sample kernel
    in a compiled loop 918 -> 866 ns, the Predictor's call 0.98x (float32, Emerald Rapids)."""
    width = 0
    for l in range(layout.shape[0]):
        width = max(width, layout[l, 3])
    return width


@jit
def forward_packed_into(flat, layout, x, out):
    """Forward pass row by row over params packed in one flat array, for a few rows at a time.

    Layer l's W (n_in x n_out, row-major) starts at flat[layout[l, 0]], its b at flat[layout[l, 1]];
    layout[l, 2:5] = (n_in, n_out, activation code): one small array, because every array argument
    costs ~0.1 us to unbox, a tenth of the whole call. Hidden activations alternate between two
    scratch rows; each layer is ``_layer_row``.
    """
    scratch = _row_scratch(flat.dtype, _widest_layer(layout))
    flat, layout, x, out = views.borrow((flat, layout, x, out))
    for r in range(x.shape[0]):
        _packed_row(flat, layout, x[r], scratch, out[r])
    views.hold(scratch)


@jit(options=ROW_OPTIONS)
def forward_packed_row_into(flat, layout, x, out):
    """``forward_packed_into`` for one 1-D sample x into a 1-D out. It keeps the GIL
    (ROW_OPTIONS): the Predictor's call on the tiny net 1091 -> 997 ns (Zen 4, 6 alternating runs)."""
    scratch = _row_scratch(flat.dtype, _widest_layer(layout))
    # Borrowed (``views.borrow``): binding them in the inlined helpers takes no references. The
    # tiny net's kernel in a compiled loop 358 -> 294 ns, the Predictor's call 0.95x (Zen 4).
    flat, layout, x, out = views.borrow((flat, layout, x, out))
    _packed_row(flat, layout, x, scratch, out)
    views.hold(scratch)


@jit(options=ROW_OPTIONS)
def forward_packed_members_into(flat, layout, x, out):
    """``forward_packed_into`` for each member of an ensemble packed in ``flat``: layout has one
    row per layer of each member, member k's L layers in rows k L .. k L + L - 1; x (rows, n_in)
    is every member's; out[k] (out (K, rows, n_out)) receives member k's outputs."""
    scratch = _row_scratch(flat.dtype, _widest_layer(layout))
    flat, layout, x, out = views.borrow((flat, layout, x, out))
    count = out.shape[0]
    depth = layout.shape[0] // count
    for k in range(count):
        member_layout = views.matrix(layout, k * depth * layout.shape[1], depth, layout.shape[1])
        member_out = views.member_views(out, k)
        for r in range(x.shape[0]):
            _packed_row(flat, member_layout, x[r], scratch, member_out[r])
    views.hold(scratch)


def _sample(x, r):
    """Row r of a 2-D x; a 1-D x (one sample) itself. Jitted only."""
    raise NotImplementedError("_sample is only callable from compiled kernels")


@overload(_sample, inline="always", jit_options=OPTIONS)
def _sample_typed(x, r):
    if x.ndim == 1:
        return lambda x, r: x
    return lambda x, r: x[r]


@jit_inline
def _samples(x):
    """Rows of a 2-D x; 1 for a 1-D x."""
    return 1 if x.ndim == 1 else x.shape[0]


@jit_inline
def _row_shapes_fit(params, layout, x, out):
    """True when layout = [n_in, ..., n_out, code_1, ..., code_L] has one code per layer, the params
    fit it (``params_fit``), x is (..., n_in) and out (..., n_out) with as many rows."""
    depth = len(params)
    if layout.shape[0] != 2 * depth + 1 or x.ndim != out.ndim:
        return False
    if x.shape[x.ndim - 1] != layout[0] or out.shape[out.ndim - 1] != layout[depth] or _samples(x) != _samples(out):
        return False
    return params_fit(params, layout)


@jit_inline
def params_fit(params, layout):
    """True when W_l is (layout[l], layout[l + 1]) and b_l (layout[l + 1],) for every layer. The
    per-layer tests are or-ed together: one branch after the loop, not three per layer."""
    bad = False
    for l in range(len(params)):
        W, b = params[l]
        bad |= W.shape[0] != layout[l]
        bad |= W.shape[1] != layout[l + 1]
        bad |= b.shape[0] != layout[l + 1]
    return not bad


@jit_inline
def forward_rows_checked(params, layout, x, out):
    """The body of ``forward_rows_checked_into`` (compiled twice: with and without the GIL).

    A 1-D x is taken as it is (``_sample``), not reshaped to one row, which would cost reshapes
    and divisions on every call."""
    if not _row_shapes_fit(params, layout, x, out):
        return False
    params, x, out = views.borrow((params, x, out))  # as in forward_packed_row_into
    depth = len(params)
    width = 1
    for l in range(1, depth + 1):
        width = max(width, layout[l])
    scratch = _row_scratch(x.dtype, width)
    for r in range(_samples(x)):
        h = _sample(x, r)
        last = _sample(out, r)
        for l in range(depth):
            W, b = params[l]
            n_in, n = W.shape
            a = last if l == depth - 1 else views.flat(scratch, (l % 2) * width, n)
            _layer_row(views.whole(W), 0, (n_in, n), b, 0, layout[depth + 1 + l], h, a)
            h = a
    views.hold(scratch)
    return True


@jit(options=ROW_OPTIONS)
def forward_rows_checked_into(params, layout, x, out):
    """out <- the network's output for a few rows x, row by row (``_layer_row``), no BLAS; x and
    out are 1-D (one sample) or 2-D (rows, width). Returns False, computing nothing, unless every
    shape fits ``layout`` = [n_in, ..., n_out, code_1, ..., code_L] (int64): W_l (sizes[l],
    sizes[l + 1]), b_l (sizes[l + 1],), x (..., n_in), out (..., n_out), as many rows in both.
    out must not overlap x or the params (``forward`` passes a fresh array).

    It checks the shapes itself so that ``forward`` can pass one sample straight in; the argument
    types are checked by the call (see ``_config.call_compiling``). It keeps the GIL (ROW_OPTIONS);
    ``forward_rows_checked_nogil_into`` is the same, releasing the GIL, for larger nets.
    """
    return forward_rows_checked(params, layout, x, out)


@jit
def forward_rows_checked_nogil_into(params, layout, x, out):
    """``forward_rows_checked_into``, releasing the GIL (``fastnn`` picks it for larger nets)."""
    return forward_rows_checked(params, layout, x, out)
