"""The arrays fastnn hands to kernels: layer buffers, per-thread workspaces, params-shaped outputs,
and recycled memory for large outputs.

Layer buffers hold one (rows, width) array per layer. Training takes a batch through the network
in blocks of ``block_rows`` rows, so the buffers stay small and in cache whatever the batch size.
``workspace`` keeps them from call to call for buffers that never leave fastnn; everything a
public function returns is freshly allocated.

Recycling. The pure functions return new arrays on every call. For arrays of a few MB glibc's
malloc maps fresh pages from the OS each time and gives them back when they are freed, so the
first write to every page faults: on the large benchmark net (8.4M params, Adam: 100 MB of outputs
per step) the faults cost ~10 ms of a ~115 ms train_step.
``empty(shape, dtype)`` returns a plain, C-contiguous, writable ndarray. From ``MIN_BYTES`` up it is
a 64-byte aligned view of a buffer kept here. When that array is garbage, and nothing else refers
to the buffer (no other view of it, no ``.base`` held: counted with ``sys.getrefcount``, against a
count measured at import on this interpreter), the buffer waits for the next request of the same
shape and dtype.
At most ``MAX_SPARE`` bytes wait at any time; a buffer with any other reference is never handed
out again, so no two live arrays ever share memory. Where reference counts cannot be trusted
(interpreters without ``sys.getrefcount``, free-threaded builds) every array is a fresh np.empty.
"""

import math
import operator
import sys
import threading
import weakref

import numpy as np

# Rows per block when a batch goes through forward and backward a block at a time (the gradient is
# summed over the blocks). Small blocks keep the activations in cache; large ones keep the products
# efficient. grad of 10k rows of 16-64-64-1 relu, float32, one thread: whole batch 3.5 ms, blocks
# of 256 rows 3.5 ms, 192 rows 2.9 ms (below 240 rows the (rows, 64) @ (64, 64) products take
# OpenBLAS's small-matrix kernels).
BLOCK_ROWS = 192
# Each block reads every weight matrix again: once one is 1 MiB or more it no longer stays in cache
# from block to block, and blocks of BLOCK_ROWS_LARGE rows are used (1024-2048-2048-1024 relu,
# batch 256, Adam: one block 108.5 ms, blocks of 192 rows 121 ms).
LARGE_WEIGHT_BYTES = 1 << 20
BLOCK_ROWS_LARGE = 512

MIN_BYTES = 1 << 20   # smaller blocks come back from malloc's free lists without page faults
ALIGN = 64            # bytes: a cache line, which the optimizer's streaming stores need (kernels.stream)
MAX_SPARE = 256 << 20  # bytes of idle buffers kept for reuse, at most

_lock = threading.RLock()  # reentrant: a finalizer may run while this thread holds it
_spare = {}                # (shape, dtype) -> [buffer, ...]
_spare_bytes = 0
_free_refs = None          # sys.getrefcount of a buffer in _release when nothing else holds it


def empty(shape, dtype):
    """An uninitialised C-contiguous array; large ones reuse memory of arrays that are gone."""
    global _spare_bytes
    dtype = np.dtype(dtype)
    if _free_refs is None or math.prod(shape) * dtype.itemsize < MIN_BYTES:
        return np.empty(shape, dtype)
    key = (tuple(shape), dtype)
    buffer = None
    with _lock:
        waiting = _spare.get(key)
        if waiting:
            buffer = waiting.pop()
            _spare_bytes -= buffer.nbytes
    if buffer is None:
        buffer = np.empty(math.prod(shape) * dtype.itemsize + ALIGN, np.uint8)
    # Views of ``out`` take ``buffer`` as their base (NumPy collapses chains of views): each is counted.
    start = -buffer.ctypes.data % ALIGN
    out = buffer[start:start + buffer.size - ALIGN].view(dtype).reshape(shape)
    weakref.finalize(out, _release, key, buffer).atexit = False
    return out


def _release(key, buffer):
    """Called when an array from ``empty`` dies: keep its buffer if nothing else refers to it."""
    global _spare_bytes
    refs = sys.getrefcount(buffer)
    if key is _CALIBRATION:
        _CALIBRATION.append(refs)
        return
    if refs != _free_refs:
        return
    with _lock:
        if _spare_bytes + buffer.nbytes <= MAX_SPARE:
            _spare.setdefault(key, []).append(buffer)
            _spare_bytes += buffer.nbytes


def spare_bytes():
    """Bytes of buffers currently waiting for reuse."""
    return _spare_bytes


def _calibrate():
    """The reference count ``_release`` sees for a buffer that nothing else holds, on this
    interpreter, or None when reference counts cannot be relied on."""
    if not hasattr(sys, "getrefcount") or not getattr(sys, "_is_gil_enabled", lambda: True)():
        return None
    buffer = np.empty(1)
    view = buffer.view()
    weakref.finalize(view, _release, _CALIBRATION, buffer).atexit = False
    del buffer, view  # the same path as a dead output: _release records the count it sees
    return _CALIBRATION.pop() if _CALIBRATION else None


_CALIBRATION = []
_free_refs = _calibrate()


# Layer buffers and workspaces

def layer_buffers(net, batch, dtype):
    """One fresh (batch, n_out) array per layer."""
    return tuple(np.empty((batch, n), dtype=dtype) for n in net.sizes[1:])


def block_rows(net, batch, dtype):
    """Rows of the layer buffers for training on batches of ``batch`` rows."""
    large = net._largest_weight * dtype.itemsize >= LARGE_WEIGHT_BYTES
    return min(batch, BLOCK_ROWS_LARGE if large else BLOCK_ROWS)


def block_buffers(net, batch, dtype):
    """(zs, acts, deltas) for training on batches of ``batch`` rows (see ``block_rows``)."""
    return tuple(layer_buffers(net, block_rows(net, batch, dtype), dtype) for _ in range(3))


_workspaces = threading.local()
_WORKSPACE_SLOTS = 8


def workspace(net, params, batch, dtype):
    """((zs, acts, deltas), grads) for a batch of ``batch`` rows, reused from call to call.

    For buffers that never leave fastnn: callers must not return any of these arrays to the user.
    The cache is per thread (the kernels release the GIL, so threads may train at once) and keyed
    on (net, rows, dtype), rows = ``block_rows``, so every large batch shares one; it keeps at most
    a few workspaces alive. grads starts zeroed and every kernel that reads it writes it first.
    """
    cache = getattr(_workspaces, "cache", None)
    if cache is None:
        cache = _workspaces.cache = {}
    rows = block_rows(net, batch, dtype)
    key = (net, rows, dtype)
    buffers = cache.get(key)
    if buffers is None:
        if len(cache) >= _WORKSPACE_SLOTS:
            cache.clear()
        buffers = cache[key] = (block_buffers(net, rows, dtype), zeros_like_params(params))
    return buffers


class PackedSets:
    """The layout of params-shaped sets ((W, b), ...) packed in one flat buffer, as the fused
    step kernel takes them (``kernels.views.param_sets``): set j (0 the params, then each moment)
    holds layer l's W from element offsets[firsts[j] + 2 l] and its b from offsets[firsts[j] + 2 l
    + 1]. Every array starts on a cache line (``ALIGN``), as np.empty's arrays of that size would
    (16 bytes) or better. ``packing`` = (shapes, offsets, firsts) is what the kernel reads.

    With ``members`` = K (an ensemble's stacked sets; None for one net's), each array holds the K
    members' arrays one after the other, W (K, n_in, n_out) and b (K, n_out): member k's array i
    starts at offsets[i] + k * strides[i] (``strides``, one per array, its member's size)."""

    __slots__ = ("dtype", "n_sets", "members", "size", "packing", "strides", "_starts")

    def __init__(self, shapes, dtype, n_sets, members=None):
        step = ALIGN // dtype.itemsize
        sizes = [size for (n_in, n_out), _ in shapes for size in (n_in * n_out, n_out)]
        padded = [-(-(members or 1) * size // step) * step for size in sizes]
        per_set = sum(padded)
        starts = np.cumsum([0] + padded[:-1])
        offsets = np.concatenate([starts + j * per_set for j in range(n_sets)]).astype(np.int64)
        self.dtype, self.n_sets, self.members, self.size = dtype, n_sets, members, per_set * n_sets
        firsts = tuple(range(0, 2 * len(shapes) * n_sets, 2 * len(shapes)))
        self.packing = (tuple((n_in, n_out) for (n_in, n_out), _ in shapes), offsets, firsts)
        self.strides = np.array(sizes * n_sets, dtype=np.int64)
        self._starts = offsets.tolist()

    def _lead(self):
        return () if self.members is None else (self.members,)

    def pack(self, sets):
        """A new flat buffer holding ``sets`` = (params, moment, ...) as laid out here, or None when
        they are not that many params-shaped tuples of ndarrays of this dtype and these shapes.
        Only the sets that are not already packed get here (``FusedStepSets.packed``): a step's
        first inputs, and params or moments the caller made."""
        shapes, dtype, starts, lead = self.packing[0], self.dtype, self._starts, self._lead()
        if len(sets) != self.n_sets:
            return None
        flat = self.new_flat()
        at = 0
        for pairs in sets:
            if type(pairs) is not tuple or len(pairs) != len(shapes):
                return None
            for (n_in, n_out), (W, b) in zip(shapes, pairs):
                w_shape, b_shape = lead + (n_in, n_out), lead + (n_out,)
                if (type(W) is not _ndarray or type(b) is not _ndarray or W.dtype is not dtype or b.dtype is not dtype
                        or W.shape != w_shape or b.shape != b_shape):
                    return None
                flat[starts[at]:starts[at] + W.size].reshape(w_shape)[...] = W
                flat[starts[at + 1]:starts[at + 1] + b.size].reshape(b_shape)[...] = b
                at += 2
        return flat

    def new_flat(self):
        """A new flat buffer for the sets, starting on a cache line."""
        raw = np.empty(self.size + ALIGN // self.dtype.itemsize, self.dtype)
        start = -raw.ctypes.data % ALIGN // self.dtype.itemsize
        return raw[start:start + self.size]

    def new(self):
        """(a new flat buffer, its sets as tuples of views)."""
        flat = self.new_flat()
        shapes, offsets, firsts = self.packing
        k, lead = self.members or 1, self._lead()
        sets = tuple(tuple((flat[offsets[first + 2 * l]:offsets[first + 2 * l] + k * n_in * n_out].reshape(
                                lead + (n_in, n_out)),
                            flat[offsets[first + 2 * l + 1]:offsets[first + 2 * l + 1] + k * n_out].reshape(lead + (n_out,)))
                           for l, (n_in, n_out) in enumerate(shapes))
                     for first in firsts)
        return flat, sets


HELD_MAX = 33
HELD_BYTES = 4 << 20


class FusedStepSets:
    """The packed buffers of the fused train step for one (net, dtype, moments used) in one
    thread: ``take()`` gives a buffer for a step's results with its sets as views, fresh to the
    caller (one of the last two no one else holds any more, or a new one); ``packed(params,
    slots)`` finds the buffer whose views these are, so that a step on the previous step's
    results passes one array instead of every W, b and moment.

    A step's results become the next step's inputs, and the step before's are dropped, so a
    training loop cycles through two buffers, and K nets of one Net stepped in turns through K + 1
    (up to ``held_max`` tracked). A buffer is free when ``sys.getrefcount`` of it and
    of every tuple and view of it is what this object's own references make (measured when the
    buffer is made): a user who keeps params, a layer's pair, an array or any view of one (whose
    base is the buffer) holds a reference, and that buffer is never handed out again. Where
    reference counts cannot be trusted (see ``_calibrate``) every buffer is new.
    """

    __slots__ = ("layout", "held", "held_max", "entries", "_rows_layout")

    def __init__(self, shapes, dtype, n_slots, members=None):
        self.layout = PackedSets(shapes, dtype, 1 + n_slots, members)
        # Buffers tracked at once: 2 for one training loop; more where several nets of this Net
        # step in turns (an ensemble trained by a loop over its members needs K + 1), up to
        # HELD_BYTES of buffers. 16 tiny nets stepped in turns, Adam: 52 -> ~20 us a step, where
        # with 2 tracked every step packed its inputs into a new buffer (Zen 4).
        self.held_max = max(2, min(HELD_MAX, HELD_BYTES // (self.layout.size * dtype.itemsize)))
        self._rows_layout = None
        # The fused step's entry points (``fastnn._entry``) for plain x and targets, by whether
        # the targets are labels: with these sets, that fixes every argument type.
        self.entries = {}
        # [(result, members, their free counts), ...], the one handed out last at the end; result
        # is (flat, (params, slots)). At most held_max: in a loop the last one is the step's input.
        self.held = []

    def take(self):
        """(flat buffer, (params_out, slots_out)) for a step's results."""
        held = self.held
        # The oldest first: in a training loop it is free, and the newest is this step's input.
        # The first unrolled: a loop from the start took ~0.2 us more a step (tiny net, Zen 4).
        # A buffer's free counts are (addresses, counts, False) for ``_counts_are`` where that
        # reads them, else sys.getrefcount's list.
        if held:
            result, members, free = held[0]
            if _counts_are(*free) if _counts_are else list(map(_getrefcount, members)) == free:
                held.append(held.pop(0))
                return result
            for i in range(1, len(held)):  # several nets of one Net stepped in turns: K + 1 buffers
                result, members, free = held[i]
                if _counts_are(*free) if _counts_are else list(map(_getrefcount, members)) == free:
                    held.append(held.pop(i))
                    return result
        flat, sets = self.layout.new()
        result = (flat, (sets[0], sets[1:]))
        if _free_refs is not None:
            members = _members(flat, sets)
            del flat, sets  # counted as the test above counts them: through result and members only
            if _counts_are is None:
                _find_counts_are()
            if _counts_are:
                free = (np.array([id(m) for m in members], dtype=np.int64), np.empty(len(members), np.int64), False)
                _counts_are(free[0], free[1], True)
            else:
                free = []
                free.extend(map(_getrefcount, members))
            if len(held) >= self.held_max:  # all in use: the caller keeps the oldest, this stops tracking it
                del held[0]
            held.append((result, members, free))
        return result

    def rows_layout(self, codes):
        """The params' place in the buffers as the packed row kernels read it
        (``kernels.network.forward_packed_into``): per layer (W at, b at, n_in, n_out, code)."""
        layout = self._rows_layout
        if layout is None:
            shapes, offsets, _ = self.layout.packing
            layout = self._rows_layout = np.array(
                [(offsets[2 * l], offsets[2 * l + 1], n_in, n_out, code)
                 for l, ((n_in, n_out), code) in enumerate(zip(shapes, codes))], dtype=np.int64)
        return layout

    def packed(self, params, slots):
        """The buffer whose sets are exactly (params, *slots), or None."""
        for (flat, (params_out, slots_out)), _, _ in reversed(self.held):  # the newest: a loop's input
            if params_out is params and len(slots_out) == len(slots) and all(map(_is, slots_out, slots)):
                return flat
        return None


def _members(flat, sets):
    """The buffer and the memory it views (every view's base), then every tuple and view of its
    sets, in one list (not the (params, slots) pair take() returns: train_step unpacks it)."""
    members = [flat.base, flat]
    for pairs in sets:
        members.append(pairs)
        for pair in pairs:
            members.append(pair)
            members.extend(pair)
    return members


_getrefcount = getattr(sys, "getrefcount", None)
_is = operator.is_
# The entry point of ``kernels.refcounts.counts_are`` where it reads the counts sys.getrefcount
# sees, False where it does not, None until ``_find_counts_are`` has looked (at the first step).
_counts_are = None


def _find_counts_are():
    """Sets ``_counts_are``: the compiled reader if, on this interpreter, one more reference to an
    object reads as one more there (a free-threaded build's header would not), else False."""
    global _counts_are
    try:
        from ._entry import entry_point
        from ._kernels.refcounts import counts_are

        probe = np.empty(1)
        addresses, counts = np.array([id(probe)], dtype=np.int64), np.zeros(2, dtype=np.int64)
        before = _getrefcount(probe)
        counts_are(addresses, counts[:1], True)
        more = [probe] * 5
        counts_are(addresses, counts[1:], True)
        reads = counts[1] - counts[0] == 5 == _getrefcount(probe) - before and 0 < counts[0] < 100
        del more
        _counts_are = entry_point(counts_are, (addresses, counts, False)) if reads else False
    except Exception:  # no compiled reader: the sys.getrefcount test
        _counts_are = False


def fused_step_sets(net, dtype, n_slots, role="step", members=None):
    """This thread's ``FusedStepSets`` for the net (kept on the Net: one attribute read), one per
    role: "step" for the train step's params and moments, "grad" for ``grad``'s results (n_slots
    0), so that neither's buffers push the other's out of the two that ``take()`` tracks; and per
    ``members``, an ensemble's stacked sets (``fastnn.stacked``)."""
    local = net.__dict__.get("_step_sets")
    if local is None:
        local = threading.local()
        object.__setattr__(net, "_step_sets", local)
    try:
        cache = local.sets
    except AttributeError:
        cache = local.sets = {}
    key = (dtype, n_slots, role, members)
    sets = cache.get(key)
    if sets is None:
        sets = cache[key] = FusedStepSets(net.shapes(), dtype, n_slots, members)
    return sets


# Params-shaped arrays

def zeros_like_params(params):
    """Zeroed arrays shaped like params (np.zeros with shape and dtype: a fraction of np.zeros_like's time)."""
    return tuple((np.zeros(W.shape, W.dtype), np.zeros(b.shape, b.dtype)) for W, b in params)


def copy_params(params):
    """C-contiguous copies of params; weight matrices of MIN_BYTES or more in recycled memory."""
    return tuple((W.copy() if W.nbytes < MIN_BYTES else _copied(empty(W.shape, W.dtype), W), b.copy())
                 for W, b in params)


def _copied(out, a):
    np.copyto(out, a)
    return out


_empty, _ndarray = np.empty, np.ndarray


def empty_small_params(shapes, dtype):
    """Uninitialised (W, b) arrays of ``shapes`` (``Net.shapes()``), for nets none of whose arrays
    reaches MIN_BYTES (the fused ones): plain np.empty from the shapes, without the size tests of
    ``empty_like_params`` (6 arrays of the tiny net: 3.4 -> 2.2 us)."""
    return tuple([(_empty(ws, dtype), _empty(bs, dtype)) for ws, bs in shapes])


def empty_like_params(params):
    """Uninitialised arrays shaped like params. Weight matrices of MIN_BYTES or more reuse the memory
    of dead ones (``empty``), which spares the page faults of fresh memory on large nets, and start
    on a 64-byte boundary, which the optimizer's streaming stores need (``kernels.stream``)."""
    # np.empty(shape, dtype) takes half the time of np.empty_like; a comprehension, not a loop of
    # appends: this runs for every train_step (6 arrays, tiny net: 3.4 -> ~2.6 us).
    return tuple([(_empty(W.shape, W.dtype) if W.nbytes < MIN_BYTES else empty(W.shape, W.dtype),
                   _empty(b.shape, b.dtype)) for W, b in params])
