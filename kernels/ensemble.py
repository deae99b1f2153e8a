"""Kernels over whole parameter tuples, stacked by ensemble member or not."""

from . import views
from ._config import EXACT_OPTIONS, jit, jit_inline
from .fused import fused_grad_buffers_into
from .network import forward_into, forward_rows_checked, grad_into, vjp_into
from .optim import update_small_into


@jit_inline
def _mix(target, online, keep, take, out):
    """out <- keep * target + take * online (1-D arrays of one size)."""
    for i in range(out.size):
        out[i] = keep * target[i] + take * online[i]


@jit
def polyak_into(target, online, tau, out):
    """out <- (1 - tau) target + tau online, array by array: params-shaped tuples ((W, b), ...) of
    C arrays of one dtype, of any rank (an ensemble's have a leading member axis). The caller
    checks that the three match."""
    take = out[0][1].dtype.type(tau)
    keep = out[0][1].dtype.type(1.0 - tau)
    for l in range(len(out)):
        _mix(views.whole(target[l][0]), views.whole(online[l][0]), keep, take, views.whole(out[l][0]))
        _mix(views.whole(target[l][1]), views.whole(online[l][1]), keep, take, views.whole(out[l][1]))


# An ensemble's members through one compiled call. Each kernel loops over the members, taking
# member k's arrays as views (``views.member_views``: W (K, n_in, n_out) -> W[k], or
# ``views.param_sets`` at member k's offsets in a packed buffer) and its rows of the batch, and
# runs the kernels of one network on them: the fused gradient for small nets
# (``fused.fused_grad_buffers_into``), the BLAS one otherwise (``network.grad_into``), and the
# update with plain stores (``optim.update_small_into``: a member's views start anywhere, not on
# the cache line streaming stores need), its gradient clipping per member.
#
# data = (x, loss, shift): x (rows, n_in) and loss = (loss code, target, labels, weights) as the
# one-network kernels take them; member k takes rows k * shift .. k * shift + n - 1 (n = shift),
# or all of them when shift is 0 (a batch shared by every member). The caller checks shapes.


@jit_inline
def _rows(a, lo, n):
    """Rows lo .. lo + n - 1 of a 2-D C array as a view; an empty placeholder stays as it is."""
    if a.shape[0] == 0:
        return views.matrix(a, 0, 0, a.shape[1])
    return views.matrix(a, lo * a.shape[1], n, a.shape[1])


@jit_inline
def _entries(a, lo, n):
    """Entries lo .. lo + n - 1 of a 1-D C array as a view; an empty placeholder stays as it is."""
    if a.shape[0] == 0:
        return views.flat(a, 0, 0)
    return views.flat(a, lo, n)


@jit_inline
def _member_batch(data, k):
    """(x, loss) of member k (see above)."""
    x, loss, shift = data
    code, target, labels, weights = loss
    n = x.shape[0] if shift == 0 else shift
    lo = k * shift
    return _rows(x, lo, n), (code, _rows(target, lo, n), _entries(labels, lo, n), _entries(weights, lo, n))


@jit
def fused_members_train_step_packed_into(members, packed, codes, data, work, update, packed_out):
    """Each member's fused train step (``fused.fused_grad_buffers_into``, then
    ``optim.update_small_into``) on params and moments packed in one buffer, as
    ``fastnn._buffers.PackedSets`` lays out an ensemble's: members = (packing, strides, first):
    members first .. first + len(losses) - 1 are stepped (another thread may step the others into
    the same ``packed_out``: each member writes only its own places), member
    k's sets are ``views.param_sets(packed, shapes, offsets + k * strides, firsts)`` (params,
    then each moment), and its updated ones go to the same places in ``packed_out``; losses[k -
    first] <- its loss before the update. work = (grads_packing, grads_size, losses): one member's
    gradient is the one set of ``views.param_sets(grads_flat, *grads_packing)`` in a workspace of
    grads_size elements made here; update = (optimizer code, hp). Two arrays to unbox in place of
    every stacked W, b and moment, in and out (16 tiny members, Adam: 6 + 12 + 18, and 18
    outputs to allocate; 2 tiny members 49.9 -> 35.4 us a step). Nothing is checked here: the
    caller packs both buffers by the same layout and screens the batch."""
    (shapes, offsets, firsts), strides, first = members
    grads_packing, grads_size, losses = work
    opt_code, hp = update
    # Borrowed (``views.borrow``): passed on to the gradient and the update as they are, each of
    # their arrays would be taken and dropped (two atomic operations) at every call.
    packed, packed_out, codes, data, losses = views.borrow((packed, packed_out, codes, data, losses))
    grads_flat = views.aligned_empty(grads_size, packed)
    grads = views.param_sets(grads_flat, *grads_packing)[0]
    at = offsets.copy()
    for k in range(first, first + losses.shape[0]):
        for i in range(at.shape[0]):
            at[i] = offsets[i] + k * strides[i]
        sets = views.param_sets(packed, shapes, at, firsts)
        sets_out = views.param_sets(packed_out, shapes, at, firsts)
        x, loss = _member_batch(data, k)
        losses[k - first] = fused_grad_buffers_into(sets[0], codes, x, loss, (), grads)
        update_small_into(opt_code, hp, sets[0], grads, sets[1:], sets_out[0], sets_out[1:])
    views.hold(grads_flat)


@jit
def members_train_step_into(params, codes, data, work, update, out):
    """Each member's train step through the BLAS gradient (``network.grad_into``) and the update
    with plain stores (``optim.update_small_into``), on stacked params (tuples of arrays with the
    member axis): losses[k] <- its loss before the update, out <- the updated params and moments.
    work = (layer buffers, one member's grads, losses (K,)); update = (optimizer code, hp,
    moments); out = (params_out, moments_out), all stacked like params."""
    params, codes, data, work, update, out = views.borrow((params, codes, data, work, update, out))
    buffers, grads, losses = work
    opt_code, hp, slots = update
    params_out, slots_out = out
    for k in range(losses.shape[0]):
        x, loss = _member_batch(data, k)
        member_params = views.member_views(params, k)
        losses[k] = grad_into(member_params, codes, x, loss, buffers, grads)
        update_small_into(opt_code, hp, member_params, grads, views.member_views(slots, k),
                          views.member_views(params_out, k), views.member_views(slots_out, k))


@jit_inline
def _members_grad(grad, params, codes, data, buffers, out):
    """losses[k] <- member k's mean loss, grads[k] <- its gradient; out = (grads, losses)."""
    params, codes, data, buffers, out = views.borrow((params, codes, data, buffers, out))
    grads, losses = out
    for k in range(losses.shape[0]):
        x, loss = _member_batch(data, k)
        losses[k] = grad(views.member_views(params, k), codes, x, loss, buffers, views.member_views(grads, k))


@jit
def fused_members_grad_into(params, codes, data, buffers, out):
    """``_members_grad`` through the fused gradient."""
    _members_grad(fused_grad_buffers_into, params, codes, data, buffers, out)


@jit
def members_grad_into(params, codes, data, buffers, out):
    """``_members_grad`` through the BLAS gradient."""
    _members_grad(grad_into, params, codes, data, buffers, out)


@jit
def members_vjp_into(params, codes, x, dy, buffers, out):
    """Member k's vector-Jacobian product on x[k] (K, rows, n_in) and dy[k] (K, rows, n_out):
    out = (grads, dx), stacked, grads[k] = dL/dparams and dx[k] = dL/dx given dy = dL/d(output)."""
    grads, dx = out
    for k in range(x.shape[0]):
        vjp_into(views.member_views(params, k), codes, views.member_views(x, k), views.member_views(dy, k),
                 buffers, views.member_views(grads, k), views.member_views(dx, k))


@jit
def members_forward_into(params, codes, x, shift, acts, out):
    """out[k] <- member k's outputs (out (K, n, n_out)) on its rows of x, as ``_member_batch``
    takes them; acts: one (n, width) buffer per layer."""
    last = acts[len(acts) - 1]
    n = x.shape[0] if shift == 0 else shift
    for k in range(out.shape[0]):
        forward_into(views.member_views(params, k), codes, _rows(x, k * shift, n), acts)
        views.copy_into(views.member_views(out, k), last)


@jit
def members_forward_rows_into(params, layout, x, shift, out):
    """``members_forward_into`` row by row without BLAS (``network.forward_rows_checked``, which
    checks each member's shapes against the row layout), for a few rows. The body inlined, not
    ``forward_rows_checked_into`` called: that kernel is compiled only through
    ``call_compiling``, and compiling a caller of it would switch its compilation back on."""
    n = x.shape[0] if shift == 0 else shift
    for k in range(out.shape[0]):
        forward_rows_checked(views.member_views(params, k), layout, _rows(x, k * shift, n), views.member_views(out, k))


@jit(options=EXACT_OPTIONS)
def members_update_into(code, hp, params, grads, slots, params_out, slots_out):
    """``optim.update_small_into`` for each member of stacked params (its clipping per member)."""
    for k in range(params[0][0].shape[0]):
        update_small_into(code, hp, views.member_views(params, k), views.member_views(grads, k),
                          views.member_views(slots, k), views.member_views(params_out, k),
                          views.member_views(slots_out, k))
